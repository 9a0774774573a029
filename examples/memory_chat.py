"""Memory chat core, end to end: train the LSTM encoder-decoder from scratch on
a synthetic corpus, then use it for long-term memory retrieval, short-term
memory and per-session state.

Run:  PYTHONPATH=. python examples/memory_chat.py [--steps 150]
"""

import argparse
import random
import time

import torch

from fastlstm.models import MemoryIndex, Seq2SeqLSTM, SessionStore, ShortTermMemory
from fastlstm.models.chat.training import COMPANIES, PEOPLE, TOPICS, TrainConfig, synthetic_corpus, train

QUERIES = ["Any news from {person}?", "Remind me what {person} told me.", "{person} called again today."]


def memory_turns(seed: int = 123):
    """One remembered turn per person, phrased unlike the queries."""
    rng = random.Random(seed)
    return [f"Met {p} from {rng.choice(COMPANIES)} to talk about the {rng.choice(TOPICS)}." for p in PEOPLE]


def retrieval_accuracy(model, verbose: bool = False) -> float:
    """Share of queries whose top hit is the remembered turn about the same person."""
    turns = memory_turns()
    index = MemoryIndex(dim=model.encoder.dim, threshold=-1.0)  # rank everything; the threshold is shown below
    index.add(model.encoder.encode(turns), [{"person": p, "text": t} for p, t in zip(PEOPLE, turns)])
    queries = [(p, q.format(person=p)) for q in QUERIES for p in PEOPLE]
    vecs = model.encoder.encode([q for _, q in queries])
    hits = index.search_batch(vecs, top_k=1)
    correct = sum(h[0].metadata["person"] == p for (p, _), h in zip(queries, hits))
    if verbose:
        for (p, q), h in list(zip(queries, hits))[:4]:
            print(f"  query {q!r:40} -> {h[0].metadata['text']!r} (cosine {h[0].score:.2f})")
    return correct / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--conversations", type=int, default=400)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Seq2SeqLSTM(embed_dim=32, encoder_hidden=64, decoder_hidden=128, dim=64)
    model.eval()
    print(f"retrieval top-1 accuracy before training: {retrieval_accuracy(model):.2f} "
          f"(chance {1 / len(PEOPLE):.2f})")

    corpus = synthetic_corpus(args.conversations, turns=4, seed=0)
    print(f"training {args.steps} steps on {len(corpus)} synthetic conversations "
          f"(denoising autoencoder + next-turn contrastive), {torch.get_num_threads()} threads")
    history = train(model, corpus, TrainConfig(steps=args.steps, batch_size=32, lr=3e-3, log_every=50), log=print)
    print(f"trained in {history.seconds:.0f} s")
    print(f"retrieval top-1 accuracy after training: {retrieval_accuracy(model, verbose=True):.2f}")

    # Long-term memory with the design's defaults (top 5, cosine >= 0.7).
    ltm = MemoryIndex(dim=model.encoder.dim)
    turns = memory_turns()
    ltm.add(model.encoder.encode(turns), [{"text": t} for t in turns])
    query = "What did Priya say?"
    print(f"LTM hits for {query!r} (top {ltm.top_k}, cosine >= {ltm.threshold}):")
    for hit in ltm.search(model.encoder.encode([query])[0]):
        print(f"  {hit.score:.2f}  {hit.metadata['text']}")

    # Short-term memory: the last 15 messages within 500 tokens, older ones folded into a text summary.
    stm = ShortTermMemory()
    for turn in synthetic_corpus(6, turns=4, seed=9):
        for i, text in enumerate(turn):
            stm.add("user" if i % 2 == 0 else "assistant", text)
    print(f"STM keeps {len(stm.messages)} messages ({stm.tokens} tokens); "
          f"{stm.summarized} older ones are summarised as:\n{stm.summary}")

    # Sessions carry the decoder state between turns, isolated per user. The decoder was trained to
    # rebuild its input, so what it generates is a reconstruction, not a reply (replies come from the
    # LLM given to MemoryAugmentedChat; see examples/memory_chat_service/).
    sessions = SessionStore()
    start = time.perf_counter()
    for sid, text in [("u1", "I had lunch with Mei from Hooli yesterday."), ("u2", "Should I email Oscar?"),
                      ("u1", "What did Mei say about the budget?")]:
        rebuilt = sessions.reconstruct(model, sid, text, max_length=60)
        print(f"  [{sid}] {text}\n  [{sid}] reconstructed: {rebuilt!r}")
    print(f"3 reconstructions in {time.perf_counter() - start:.2f} s; session u1 has {sessions.get('u1').turns} turns")


if __name__ == "__main__":
    main()
