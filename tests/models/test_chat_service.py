"""Entity extraction, STM counters and summaries, the memory-augmented chat service, the
example FastAPI app end to end (SQLite store), and the threshold calibration."""

import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlstm.models.chat import (
    ChatConfig,
    ExtractiveSummariser,
    LSTMEncoder,
    MemoryAugmentedChat,
    ShortTermMemory,
    SpacyNER,
    SQLiteVecStore,
    no_language_model,
    token_counter,
)
from fastlstm.models.chat.calibration import calibrate_threshold, evaluate, measure, paraphrase_set
from fastlstm.models.chat.memory import LTM_SIMILARITY_THRESHOLD
from fastlstm.models.chat.stm import Message

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ner():
    return SpacyNER()


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return LSTMEncoder(embed_dim=16, hidden_size=16, dim=16).eval()


# -- NER ---------------------------------------------------------------------

def test_blank_pipeline_finds_skills_companies_roles(ner):
    got = ner("I'm a Data Scientist at Contoso; I write Python and SQL and I go to Google events.")
    assert got == {"companies": ["Contoso", "Google"], "roles": ["Data Scientist"], "skills": ["Python", "SQL"]}
    assert ner("nothing to see here") == {}
    assert ner.nlp.pipe_names == ["fastlstm_entity_ruler"] and ner.model == "blank:en"
    with pytest.raises(TypeError):
        ner(b"bytes")


def test_user_pattern_file_extends_the_defaults(tmp_path):
    (tmp_path / "mine.jsonl").write_text('{"label": "SKILL", "pattern": [{"LOWER": "haskell"}]}\n'
                                         '{"label": "PROJECT", "pattern": "Project Falcon"}\n')
    ner = SpacyNER(patterns=[tmp_path / "mine.jsonl"])
    assert ner("Haskell and Python on Project Falcon") == {"project": ["Project Falcon"],
                                                             "skills": ["Haskell", "Python"]}
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl"):
        SpacyNER(patterns=[tmp_path / "bad.jsonl"])


def test_named_trained_pipeline_is_used(tmp_path):
    import spacy
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("ner").add_label("GPE")
    texts = [("I moved to Lisbon last year", [(11, 17, "GPE")]), ("Lisbon is sunny", [(0, 6, "GPE")]),
             ("We flew to Osaka", [(11, 16, "GPE")]), ("I like tea", [])]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in texts]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    nlp.to_disk(tmp_path / "pipeline")
    ner = SpacyNER(str(tmp_path / "pipeline"))
    assert ner.nlp.pipe_names == ["fastlstm_entity_ruler", "ner"]
    got = ner("I moved to Lisbon last year and write Python")
    assert got == {"gpe": ["Lisbon"], "skills": ["Python"]}
    with pytest.raises(ValueError, match="NER_MODEL 'en_core_web_nonexistent'"):
        SpacyNER("en_core_web_nonexistent")


# -- STM ---------------------------------------------------------------------

def test_stm_counts_with_any_tokenizer_encode():
    words = token_counter(str.split)  # any text -> ids callable
    stm = ShortTermMemory(max_messages=100, max_tokens=6, count_tokens=words)
    stm.add("user", "one two three")
    stm.add("user", "four five six")
    assert stm.tokens == 6 and len(stm.messages) == 2
    stm.add("user", "seven")
    assert [m.text for m in stm.messages] == ["four five six", "seven"] and stm.summarized == 1
    assert words(stm.summary) <= stm.summary_max_tokens == 3 or stm.summary == ""
    with pytest.raises(TypeError, match="count_tokens"):
        ShortTermMemory(count_tokens=lambda t: "3").add("user", "x")


def test_extractive_summary_keeps_the_recurring_topic_in_order():
    summarise = ExtractiveSummariser()
    msgs = [Message("user", "I am moving to Lisbon in May. The weather is nice today.", 0),
            Message("assistant", "Lisbon in May is lovely. Do you need a flat in Lisbon?", 0),
            Message("user", "Yes, a flat near the Lisbon river. Thanks!", 0)]
    count = len  # characters
    summary = summarise(msgs, "", 120, count)
    assert count(summary) <= 120
    lines = summary.splitlines()
    assert lines[0] == "Summary of earlier messages:" and len(lines) >= 3
    assert all("Lisbon" in line for line in lines[1:])  # the sentences about the recurring topic
    conversation = " ".join(m.text for m in msgs)
    positions = [conversation.index(line.split(": ", 1)[1]) for line in lines[1:]]
    assert positions == sorted(positions)  # conversation order
    # the previous summary competes with new messages, and the budget holds
    again = summarise([Message("user", "My Lisbon flat has a balcony.", 0)], summary, 120, count)
    assert count(again) <= 120 and "balcony" in again
    assert summarise(msgs, "", 5, count) == ""  # nothing fits


# -- service -----------------------------------------------------------------

class RecordingLLM:
    def __init__(self):
        self.prompts = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        return f"reply {len(self.prompts)}"


def _chat(encoder, tmp_path, ner, **config):
    store = SQLiteVecStore(tmp_path / "ltm.db", dim=encoder.dim)
    llm = RecordingLLM()
    return MemoryAugmentedChat(encoder.encode, store, llm=llm, ner=ner, config=ChatConfig(**config)), llm


def test_service_retrieves_assembles_and_updates_both_memories(encoder, tmp_path, ner):
    chat, llm = _chat(encoder, tmp_path, ner, ltm_similarity_threshold=-1.0, ltm_top_k=2, stm_max_messages=3)
    first = chat.respond("u1", "I work at Contoso as a nurse.")
    assert first.reply == "reply 1" and first.memories == []
    assert first.entities == {"companies": ["Contoso"], "roles": ["nurse"]}
    assert llm.prompts[0] == "user: I work at Contoso as a nurse.\nassistant:"
    chat.respond("u1", "My sister lives in Lisbon.")
    third = chat.respond("u1", "Where do I work?")
    # the top-2 LTM entries (similarity order) and the STM before the new message
    assert {m.content for m in third.memories} == {"I work at Contoso as a nurse.", "My sister lives in Lisbon."}
    prompt = llm.prompts[2]
    assert prompt.startswith("Relevant things the user said before:\n- ")
    assert "Recent conversation:\n" in prompt and prompt.endswith("user: Where do I work?\nassistant:")
    stm = chat.short_term("u1")
    assert len(stm.messages) == 3 and stm.summarized == 3 and stm.messages[-1].text == "reply 3"
    assert "Contoso" in stm.summary  # folded into the text summary, not lost
    assert chat.store.count("u1") == 3
    # another user sees none of u1's memories
    other = chat.respond("u2", "Where do I work?")
    assert other.memories == [] and "Contoso" not in llm.prompts[3]
    assert chat.forget("u1") == 3 and chat.store.count("u1") == 0 and chat.short_term("u1").context() == ""
    assert chat.store.count("u2") == 1


def test_service_threshold_and_concurrent_users(encoder, tmp_path, ner):
    chat, _ = _chat(encoder, tmp_path, ner, ltm_similarity_threshold=1.0)
    chat.respond(None, "I like tea.")
    assert chat.respond(None, "Something else entirely!").memories == []  # nothing is that similar
    threads = [threading.Thread(target=lambda u=u: [chat.respond(u, f"note {i} of {u}") for i in range(4)])
               for u in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [chat.store.count(u) for u in "abc"] == [4, 4, 4]
    assert [len(chat.short_term(u).messages) for u in "abc"] == [8, 8, 8]
    with pytest.raises(ValueError, match="non-empty"):
        chat.respond("a", "   ")
    with pytest.raises(TypeError, match="llm"):
        MemoryAugmentedChat(encoder.encode, chat.store, llm=None, ner=ner)


def test_no_language_model_is_labelled():
    assert no_language_model("ctx").startswith("[no language model configured")


def test_config_from_environment():
    assert ChatConfig.from_env({}) == ChatConfig()
    assert (ChatConfig().stm_max_messages, ChatConfig().stm_max_tokens, ChatConfig().ltm_top_k) == (15, 500, 5)
    assert ChatConfig().ltm_similarity_threshold == LTM_SIMILARITY_THRESHOLD and ChatConfig().ner_model == ""
    env = {"STM_MAX_MESSAGES": "4", "STM_MAX_TOKENS": "80", "LTM_TOP_K": "2", "LTM_SIMILARITY_THRESHOLD": "0.5",
           "NER_MODEL": "my_pipeline"}
    assert ChatConfig.from_env(env) == ChatConfig(4, 80, 2, 0.5, "my_pipeline")
    for name, bad in [("STM_MAX_MESSAGES", "0"), ("LTM_TOP_K", "five"), ("LTM_SIMILARITY_THRESHOLD", "2"),
                      ("STM_MAX_TOKENS", "1.5")]:
        with pytest.raises(ValueError, match=name):
            ChatConfig.from_env({name: bad})


# -- the example FastAPI app -------------------------------------------------

def _example_app():
    spec = importlib.util.spec_from_file_location("memory_chat_app", ROOT / "examples/memory_chat_service/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: pydantic resolves the models' annotations there
    spec.loader.exec_module(module)
    return module


def test_example_app_end_to_end_with_sqlite(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("LTM_DATABASE", f"sqlite:///{tmp_path / 'chat.db'}")
    monkeypatch.setenv("LTM_SIMILARITY_THRESHOLD", "-1")
    monkeypatch.setenv("LTM_TOP_K", "3")
    llm = RecordingLLM()
    client = TestClient(_example_app().create_app(llm=llm))
    health = client.get("/health").json()
    assert health["store"] == "SQLiteVecStore" and health["ltm_top_k"] == 3
    r = client.post("/chat", json={"message": "I work at Contoso as a data scientist", "user_id": "u1"})
    assert r.status_code == 200
    body = r.json()
    assert body["reply"] == "reply 1" and body["memories"] == []
    assert body["entities"] == {"companies": ["Contoso"], "roles": ["data scientist"]}
    r = client.post("/chat", json={"message": "Which company do I work for?", "user_id": "u1"})
    (memory,) = r.json()["memories"]
    assert memory["content"] == "I work at Contoso as a data scientist"
    assert memory["ner_entities"]["companies"] == ["Contoso"] and -1.0 <= memory["score"] <= 1.0
    assert "I work at Contoso" in llm.prompts[1]
    # user_id is optional: without it the turn belongs to the anonymous user, who has no memories of u1
    r = client.post("/chat", json={"message": "Which company do I work for?"})
    assert r.status_code == 200 and r.json()["memories"] == []
    assert client.post("/chat", json={"user_id": "u1"}).status_code == 422
    assert client.post("/chat", json={"message": "   "}).status_code == 422
    assert client.delete("/memory/u1").json() == {"deleted": 2}
    assert client.post("/chat", json={"message": "hello", "user_id": "u1"}).json()["memories"] == []


# -- calibration -------------------------------------------------------------

def test_paraphrase_splits_are_disjoint_and_seeded():
    cal, held = paraphrase_set(40, split="calibration"), paraphrase_set(40, split="heldout")
    assert len(cal.memories) == len(set(cal.memories)) == 40 and len(cal.queries) == 80
    assert not set(cal.queries) & set(held.queries) and not set(cal.queries) & set(cal.memories)
    assert paraphrase_set(40, split="heldout").queries == held.queries
    with pytest.raises(ValueError):
        paraphrase_set(5, split="train")


def test_evaluate_and_calibrate_on_known_scores():
    # 3 queries x 4 memories; answers 0, 1, 2
    scores = np.array([[0.9, 0.1, 0.2, 0.3], [0.8, 0.7, 0.1, 0.0], [0.1, 0.2, 0.3, 0.95]])
    q = evaluate(scores, [0, 1, 2], k=1)
    assert q.recall_at_k == pytest.approx(1 / 3)
    q = evaluate(scores, [0, 1, 2], k=2, threshold=0.5)
    assert q.recall_at_k == 1.0 and q.recall_at_threshold == pytest.approx(2 / 3)  # 0.3 is cut
    assert q.precision_at_threshold == pytest.approx(2 / 4)  # returned: .9, .8, .7, .95
    assert calibrate_threshold(scores, [0, 1, 2], k=1) == pytest.approx(0.9)  # keeps only the right hit


def test_untrained_encoder_beats_chance_on_held_out_paraphrases(encoder):
    threshold, cal, held = measure(encoder.encode, n_facts=60)
    assert held.recall_at_k > 5 * (5 / 60)  # well above chance (top 5 of 60)
    assert -1.0 <= threshold <= 1.0 and cal.recall_at_threshold > 0
