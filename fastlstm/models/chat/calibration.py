"""Retrieval quality of an encoder and a calibrated similarity threshold, on a paraphrase
set built here from templates (nothing downloaded).

Each fact ("I work at Contoso as a nurse") is remembered in one phrasing; the queries
are other phrasings of the same fact. The calibration and held-out sets use
disjoint query templates and independently drawn values, so the threshold is chosen
on one and reported on the other.

Run:  python -m fastlstm.models.chat.calibration [--train-steps 0]
"""

from __future__ import annotations

import argparse
import platform
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# category -> (memory template, calibration query templates, held-out query templates, value slots)
_TEMPLATES = {
    "work": ("I work at {company} as a {role}.",
             ["My job: {role} at {company}.", "{company} employs me as their {role}."],
             ["I am a {role} and my employer is {company}.", "At {company} I have the {role} position."]),
    "home": ("I live in {city} with my {relative}.",
             ["My {relative} and I share a flat in {city}.", "Home for me is {city}, together with my {relative}."],
             ["{city} is where my {relative} and I live.", "I stay in {city}; my {relative} lives with me."]),
    "pet": ("I have a {animal} called {name}.",
            ["My {animal}'s name is {name}.", "{name} is the name of my {animal}."],
            ["I own a {animal} named {name}.", "There is a {animal} at home, {name}."]),
    "hobby": ("On weekends I play {sport} with {friend}.",
              ["{friend} and I play {sport} every weekend.", "Weekend plans: {sport} with {friend}."],
              ["Every Saturday {friend} joins me for {sport}.", "I spend weekends playing {sport} alongside {friend}."]),
    "learning": ("I am learning {skill} for my {goal}.",
                 ["For my {goal} I study {skill}.", "Studying {skill} because of my {goal}."],
                 ["My {goal} is why I am picking up {skill}.", "I took up {skill} to help with my {goal}."]),
}
_VALUES = {
    "company": ["Contoso", "Fabrikam", "Northwind", "Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Acme",
                "Stark Industries", "Wayne Enterprises", "Tyrell", "Cyberdyne", "Soylent", "Wonka"],
    "role": ["nurse", "data scientist", "teacher", "accountant", "product manager", "designer", "pilot", "chef",
             "software engineer", "lawyer", "architect", "pharmacist"],
    "city": ["Lisbon", "Osaka", "Nairobi", "Toronto", "Krakow", "Lima", "Hanoi", "Oslo", "Denver", "Adelaide",
             "Porto", "Seville", "Tbilisi", "Cork"],
    "relative": ["sister", "brother", "mother", "father", "cousin", "grandmother", "partner", "aunt"],
    "animal": ["dog", "cat", "parrot", "rabbit", "hamster", "tortoise", "goldfish", "ferret"],
    "name": ["Biscuit", "Luna", "Pepper", "Milo", "Ziggy", "Nala", "Tofu", "Rocket", "Olive", "Mochi", "Gizmo"],
    "sport": ["tennis", "football", "chess", "badminton", "volleyball", "squash", "golf", "table tennis"],
    "friend": ["Priya", "Mateo", "Aiko", "Kwame", "Sofia", "Lars", "Amara", "Diego", "Mei", "Oskar"],
    "skill": ["Spanish", "Python", "the piano", "statistics", "Japanese", "woodworking", "SQL", "photography"],
    "goal": ["new job", "trip to Peru", "thesis", "band", "startup", "exam", "family", "promotion"],
}


@dataclass
class ParaphraseSet:
    memories: list[str]          # one remembered phrasing per fact
    queries: list[str]           # other phrasings
    answers: list[int]           # index into memories of each query's fact


def paraphrase_set(n_facts: int = 150, *, split: str = "heldout", seed: int = 0) -> ParaphraseSet:
    """``n_facts`` distinct facts (values drawn with ``seed``) and their paraphrase queries from
    the ``split``'s templates ("calibration" or "heldout": disjoint templates)."""
    if split not in ("calibration", "heldout"):
        raise ValueError(f"split must be 'calibration' or 'heldout', got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    seen, memories, queries, answers = set(), [], [], []
    while len(memories) < n_facts:
        category = rng.choice(sorted(_TEMPLATES))
        memory, calibration, heldout = _TEMPLATES[category]
        slots = [s for s in _VALUES if "{" + s + "}" in memory]
        values = {s: rng.choice(_VALUES[s]) for s in slots}
        key = (category, tuple(sorted(values.items())))
        if key in seen:
            continue
        seen.add(key)
        memories.append(memory.format(**values))
        for template in calibration if split == "calibration" else heldout:
            queries.append(template.format(**values))
            answers.append(len(memories) - 1)
    return ParaphraseSet(memories, queries, answers)


@dataclass
class Quality:
    recall_at_k: float     # share of queries whose fact is among the k most similar memories
    k: int
    threshold: float
    recall_at_threshold: float     # ... and also has cosine >= threshold
    precision_at_threshold: float  # share of returned hits (top k, >= threshold) that are the fact


def _scores(encode: Callable[[Sequence[str]], np.ndarray], data: ParaphraseSet) -> np.ndarray:
    m = np.asarray(encode(data.memories), dtype=np.float32)
    q = np.asarray(encode(data.queries), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q @ m.T


def evaluate(scores: np.ndarray, answers: Sequence[int], *, k: int = 5, threshold: float = -1.0) -> Quality:
    answers = np.asarray(answers)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, top, 1)
    correct = top == answers[:, None]
    kept = top_scores >= threshold
    returned = int(kept.sum())
    return Quality(
        recall_at_k=float(correct.any(1).mean()), k=k, threshold=float(threshold),
        recall_at_threshold=float((correct & kept).any(1).mean()),
        precision_at_threshold=float((correct & kept).sum() / returned) if returned else 0.0)


def calibrate_threshold(scores: np.ndarray, answers: Sequence[int], *, k: int = 5) -> float:
    """The threshold (rounded to 0.01) with the best F1 of precision and recall at threshold
    over the top-k hits; the highest such one where several tie."""
    best, best_f1 = -1.0, -1.0
    for t in np.round(np.arange(-1.0, 1.0001, 0.01), 2):
        q = evaluate(scores, answers, k=k, threshold=float(t))
        p, r = q.precision_at_threshold, q.recall_at_threshold
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 >= best_f1:
            best, best_f1 = float(t), f1
    return best


def measure(encode, *, k: int = 5, n_facts: int = 150, seed: int = 0) -> tuple[float, Quality, Quality]:
    """(threshold calibrated on the calibration split, quality on it, quality on the held-out split)."""
    cal = paraphrase_set(n_facts, split="calibration", seed=seed)
    held = paraphrase_set(n_facts, split="heldout", seed=seed)
    cal_scores = _scores(encode, cal)
    threshold = calibrate_threshold(cal_scores, cal.answers, k=k)
    return (threshold, evaluate(cal_scores, cal.answers, k=k, threshold=threshold),
            evaluate(_scores(encode, held), held.answers, k=k, threshold=threshold))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    import torch

    from fastlstm.models.chat.model import LSTMEncoder, Seq2SeqLSTM
    from fastlstm.models.chat.training import TrainConfig, synthetic_corpus, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=0, help="train the encoder first (0: as initialised)")
    parser.add_argument("--facts", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.train_steps:
        model = Seq2SeqLSTM()
        train(model, synthetic_corpus(400, seed=args.seed), TrainConfig(steps=args.train_steps))
        encoder = model.encoder.eval()
    else:  # what examples/memory_chat_service uses without CHAT_ENCODER (seed 0)
        encoder = LSTMEncoder().eval()
    threshold, cal, held = measure(encoder.encode, n_facts=args.facts, seed=args.seed)
    print(f"cpu: {_cpu_model()}; encoder: default LSTMEncoder, "
          f"seed {args.seed}, trained {args.train_steps} steps; {args.facts} facts per split")
    print(f"calibrated threshold (best F1 on the calibration split): {threshold:.2f}")
    for name, q in (("calibration", cal), ("held-out", held)):
        print(f"{name:12} recall@{q.k} {q.recall_at_k:.3f}  at threshold: recall {q.recall_at_threshold:.3f} "
              f"precision {q.precision_at_threshold:.3f}")


if __name__ == "__main__":
    main()
