"""Generate the bundled demo suite and the tokenizer that ships with it. Deterministic: `python data/demo/generate.py`.

One small, learnable task per MUPPET family, written as JSONL so it loads through the same local-file path
(`load_dataset("json", data_files=...)`) a user's own data takes. Tasks and sizes are described in data/demo/README.md.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
TOKENIZER_DIR = HERE.parent.parent / "assets" / "tokenizer"

NOUNS = {
    "animal": ["dog", "cat", "horse", "bird", "fish", "rabbit", "tiger", "mouse", "sheep", "goat"],
    "food": ["apple", "bread", "cheese", "rice", "soup", "cake", "pasta", "banana", "egg", "salad"],
    "vehicle": ["car", "bus", "train", "bike", "truck", "boat", "plane", "tram", "van", "ship"],
    "tool": ["hammer", "saw", "drill", "wrench", "knife", "ladder", "shovel", "rake", "axe", "brush"],
}
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "pink"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
POSITIVE = ["great", "wonderful", "excellent", "lovely", "delightful", "superb", "brilliant", "pleasant"]
NEGATIVE = ["terrible", "awful", "horrible", "boring", "dreadful", "poor", "disappointing", "bad"]
FILLER = ["honestly", "really", "quite", "very", "truly", "rather", "simply", "overall"]
SUBJECTS = ["the movie", "the meal", "the trip", "the show", "the book", "the hotel", "the concert", "the game"]
ADJECTIVES = ["big", "small", "old", "new", "fast", "slow", "happy", "quiet", "loud", "tall"]
VERBS = ["sees", "likes", "finds", "moves", "pushes", "follows", "carries", "watches"]
PLACES = ["park", "house", "garden", "street", "market", "school", "river", "field"]
ALL_NOUNS = [n for nouns in NOUNS.values() for n in nouns]


def sentiment(rng: random.Random) -> dict:
    label = rng.randrange(2)
    words = POSITIVE if label else NEGATIVE
    subject, filler = rng.choice(SUBJECTS), rng.choice(FILLER)
    sentence = f"{subject} was {filler} {rng.choice(words)}"
    if rng.random() < 0.5:
        sentence += f" and {rng.choice(words)}"
    return {"text": sentence + " .", "label": ["negative", "positive"][label]}


def topic_pair(rng: random.Random) -> dict:
    topic_a = rng.choice(list(NOUNS))
    same = rng.random() < 0.5
    topic_b = topic_a if same else rng.choice([t for t in NOUNS if t != topic_a])
    first = f"i saw a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS[topic_a])} near the {rng.choice(PLACES)} ."
    second = f"there was a {rng.choice(NOUNS[topic_b])} in the {rng.choice(PLACES)} ."
    return {"premise": first, "hypothesis": second, "label": int(same)}


def rating(rng: random.Random) -> dict:
    stars = rng.randrange(1, 6)
    words = POSITIVE if stars >= 3 else NEGATIVE
    review = f"{rng.choice(SUBJECTS)} was {rng.choice(FILLER)} {rng.choice(words)} , i give it {NUMBERS[stars - 1]} stars ."
    return {"review": review, "stars": float(stars)}


def choice(rng: random.Random) -> dict:
    topics = rng.sample(list(NOUNS), 3)
    answer = rng.randrange(3)
    options = [rng.choice(NOUNS[t]) for t in topics]
    return {"question": f"which of these is a {topics[answer]} ?", "options": options, "answer": answer}


def span(rng: random.Random) -> dict:
    nouns = rng.sample(ALL_NOUNS, 4)
    facts = [f"the {n} is {rng.choice(ADJECTIVES)} ." for n in nouns]
    facts[rng.randrange(4)] = f"the {nouns[0]} is {rng.choice(COLORS)} ."
    has_number = rng.random() < 0.5
    if has_number:
        facts.insert(rng.randrange(5), f"i count {rng.choice(NUMBERS)} of them .")
    context = " ".join(facts)
    ask_color = rng.random() < 0.5
    question = "what color is it ?" if ask_color else "how many are there ?"
    vocabulary = COLORS if ask_color else NUMBERS
    words = context.split(" ")
    hit = next((w for w in words if w in vocabulary), None)
    if hit is None:
        return {"question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    start = context.index(f" {hit} ") + 1
    return {"question": question, "context": context, "answers": {"text": [hit], "answer_start": [start]}}


def summary(rng: random.Random) -> dict:
    """The headline names the kind of thing the article is about and where it happened."""
    kind, place = rng.choice(list(NOUNS)), rng.choice(PLACES)
    first, second = rng.sample(NOUNS[kind], 2)
    sentences = [f"the {rng.choice(ADJECTIVES)} {first} {rng.choice(VERBS)} the {second} near the {place} .",
                 *(f"it was {rng.choice(FILLER)} {rng.choice(ADJECTIVES)} ." for _ in range(2))]
    return {"article": " ".join(sentences), "highlights": f"{kind} {place}"}


TASKS = {"sentiment": sentiment, "topic_pair": topic_pair, "rating": rating, "choice": choice, "span": span,
         "summary": summary}
SIZES = {"train": 2000, "validation": 200}


def write_tasks() -> list[str]:
    texts = []
    for offset, (name, make) in enumerate(TASKS.items()):
        for split_offset, (split, size) in enumerate(SIZES.items()):
            rng = random.Random(1000 * offset + split_offset)
            rows = [make(rng) for _ in range(size)]
            folder = HERE / name
            folder.mkdir(exist_ok=True)
            with open(folder / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            texts += [json.dumps(row) for row in rows]
    return texts


def write_tokenizer(texts: list[str]) -> None:
    """A byte-level BPE tokenizer in RoBERTa/BART layout (<s> a </s></s> b </s>), trained on the demo text."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=True, trim_offsets=True)
    bpe.train_from_iterator(texts, vocab_size=1000, min_frequency=2, special_tokens=specials)
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=True, add_prefix_space=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                        sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                        mask_token="<mask>", model_max_length=512)
    tokenizer.save_pretrained(TOKENIZER_DIR)


if __name__ == "__main__":
    write_tokenizer(write_tasks())
    print(f"wrote {len(TASKS)} tasks to {HERE} and a tokenizer to {TOKENIZER_DIR}")
