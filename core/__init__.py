"""What the data side (`datamodules/`) and the model side (`heads/`, `lightning_modules/`) share: the task spec, the
batch contract, metrics, the data -> model hand-off and the typed user errors. Imports nothing of the project."""
