"""The ROUGE-L novelty filter agrees with the rouge-score package and with brute force."""

import random

from rouge_score import rouge_scorer

from app.data.rouge_novelty import NoveltyIndex, rouge_l_f1, rouge_l_f1_tokens, tokenize
from app.data.self_instruct import load_seeds

WORDS = ("write give list the a of to and explain poem story cat dog about short long three "
         "reasons why how summary email friend city river Book, cat's 2024 e-mail!").split()


def _random_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a = [rng.choice(WORDS) for _ in range(rng.randint(0, 14))]
        b = list(a)
        for _ in range(rng.randint(0, 6)):  # edits make scores spread around the 0.7 threshold
            if b and rng.random() < 0.5:
                b[rng.randrange(len(b))] = rng.choice(WORDS)
            else:
                b.insert(rng.randint(0, len(b)), rng.choice(WORDS))
        pairs.append((" ".join(a), " ".join(b)))
    return pairs


def test_scores_and_decisions_match_rouge_score_on_random_pairs():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = _random_pairs(2500)
    near = 0
    for a, b in pairs:
        ref = scorer.score(a, b)["rougeL"].fmeasure
        ours = rouge_l_f1(a, b)
        assert abs(ours - ref) < 1e-12, (a, b)
        assert (ours > 0.7) == (ref > 0.7)
        near += 0.6 < ref <= 0.8
    assert near > 200  # the pairs really test the threshold region


def test_tokenizer_matches_rouge_score():
    from rouge_score import tokenize as rs_tokenize

    for text in ("Hello, World!  It's 2024.", "e-mail: A_B c—d", "ÜBER café 3.5", ""):
        assert tokenize(text) == rs_tokenize.tokenize(text, None)


def _brute_force_keep(texts: list[str], seeds: list[str]) -> list[bool]:
    kept = [tokenize(s) for s in seeds]
    out = []
    for t in texts:
        tok = tokenize(t)
        novel = all(rouge_l_f1_tokens(k, tok) <= 0.7 for k in kept)
        if novel:
            kept.append(tok)
        out.append(novel)
    return out


def test_index_decisions_equal_brute_force_on_a_stream():
    rng = random.Random(3)
    seeds = [s.instruction for s in load_seeds()]
    stream: list[str] = []
    for _ in range(900):  # a third are rewrites of earlier texts, crossing the 64/128/... re-sorts
        if stream and rng.random() < 0.4:
            words = rng.choice(stream + seeds).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            if rng.random() < 0.5:
                words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
            stream.append(" ".join(words))
        else:
            stream.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 16))))
    index = NoveltyIndex()
    for s in seeds:
        index.add(s)
    ours = [index.add_if_novel(t)[0] for t in stream]
    assert ours == _brute_force_keep(stream, seeds)
    assert 100 < sum(ours) < 800
    naive = len(stream) * (len(seeds) + sum(ours)) // 2
    assert index.pairs_scored < naive / 3  # the index really skips pairs


def test_most_similar_names_the_kept_text():
    index = NoveltyIndex()
    index.add("Write a poem about the sea.")
    index.add("List three reasons to learn to swim.")
    f1, idx = index.most_similar("Write a short poem about the sea.")
    assert idx == 0 and f1 > 0.9
    assert index.most_similar("Explain how tides work.") is None
    assert index.most_similar("!!!") is None
