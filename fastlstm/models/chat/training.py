"""Training without pretrained weights: a denoising autoencoder (reconstruct a
turn from a corrupted copy, teacher-forced) plus a next-turn contrastive loss
(a turn's memory vector should be closest to the next turn of the same
conversation among the batch), on any corpus of conversations. A seeded
synthetic corpus stands in for real conversations in tests and examples.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

PEOPLE = ["Alice", "Bruno", "Chiara", "Dmitri", "Esther", "Farid", "Greta", "Hiro", "Ingrid", "Jamal",
          "Keiko", "Lars", "Mei", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq",
          "Ulla", "Viktor", "Wanda", "Xavier", "Yusuf", "Zoe", "Amara", "Boris", "Camila", "Dev"]
COMPANIES = ["Contoso", "Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Acme", "Stark", "Wayne", "Tyrell",
             "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Monarch"]
TOPICS = ["budget", "launch", "migration", "audit", "hiring plan", "roadmap", "contract", "prototype",
          "survey", "release"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

_TEMPLATES = [
    "I had lunch with {person} from {company} yesterday.",
    "What did {person} say about the {topic}?",
    "{person} thinks the {topic} at {company} will slip to {month}.",
    "Noted: {person} expects the {topic} in {month}.",
    "Should I email {person} before the {topic} review?",
    "Yes, {person} asked for the {topic} numbers by {month}.",
]


def synthetic_corpus(n_conversations: int = 200, turns: int = 4, seed: int = 0) -> list[list[str]]:
    """Seeded conversations of ``turns`` turns; every turn of a conversation names
    the same person (its entity), so consecutive turns share it.

    >>> corpus = synthetic_corpus(10, seed=1); corpus[0][0]   # 'I had lunch with ...'
    """
    if turns < 2:
        raise ValueError("turns must be >= 2 (next-turn pairs need two)")
    rng = random.Random(seed)
    corpus = []
    for _ in range(n_conversations):
        slots = dict(person=rng.choice(PEOPLE), company=rng.choice(COMPANIES), topic=rng.choice(TOPICS),
                     month=rng.choice(MONTHS))
        start = rng.randrange(len(_TEMPLATES))
        corpus.append([_TEMPLATES[(start + t) % len(_TEMPLATES)].format(**slots) for t in range(turns)])
    return corpus


def corrupt(text: str, rng: random.Random, drop: float = 0.1, replace: float = 0.05) -> str:
    """Denoising input: drops and replaces characters at random."""
    out = []
    for ch in text:
        r = rng.random()
        if r < drop:
            continue
        out.append(rng.choice("abcdefghijklmnopqrstuvwxyz ") if r < drop + replace else ch)
    return "".join(out) or text[:1]


def contrastive_loss(anchors, positives, temperature: float = 0.1):
    """Symmetric InfoNCE over a batch of unit vectors (B, d): row i's positive is row i."""
    logits = anchors @ positives.t() / temperature
    labels = torch.arange(len(anchors), device=anchors.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    contrastive_weight: float = 1.0
    temperature: float = 0.1
    max_length: int = 160
    seed: int = 0
    log_every: int = 50


@dataclass
class TrainHistory:
    reconstruction: list[float] = field(default_factory=list)
    contrastive: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train(model, conversations: Sequence[Sequence[str]], config: TrainConfig | None = None,
          log: Callable[[str], None] | None = None) -> TrainHistory:
    """Trains a :class:`Seq2SeqLSTM` on ``conversations`` (lists of turns) in place.

    >>> history = train(Seq2SeqLSTM(), synthetic_corpus(200), TrainConfig(steps=300))
    """
    config = config or TrainConfig()
    pairs = [(c[t], c[t + 1]) for c in conversations for t in range(len(c) - 1)]
    if not pairs:
        raise ValueError("conversations need at least two turns each to form next-turn pairs")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = TrainHistory()
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        batch = rng.sample(pairs, min(config.batch_size, len(pairs)))
        anchors = [a for a, _ in batch]
        positives = [p for _, p in batch]
        rec = model.loss([corrupt(a, rng) for a in anchors], anchors, max_length=config.max_length)
        vecs, _, _, _ = model.encode_batch(anchors + positives, max_length=config.max_length)
        con = contrastive_loss(vecs[: len(batch)], vecs[len(batch) :], config.temperature)
        loss = rec + config.contrastive_weight * con
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.reconstruction.append(rec.item())
        history.contrastive.append(con.item())
        if log and (step + 1) % config.log_every == 0:
            log(f"step {step + 1:4d}  reconstruction {rec.item():.3f}  contrastive {con.item():.3f}  "
                f"{time.perf_counter() - start:.0f} s")
    history.seconds = time.perf_counter() - start
    model.eval()
    return history
