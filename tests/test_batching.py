from unlearnbench.batching import IGNORE, Pair, StepSampler, Template, TrainData, collate, encode


def test_answer_start_is_first_answer_token_chat(tokenizer):
    template = Template(tokenizer, "chat")
    question, answer = "What is the capital of Australia?", "The capital of Australia is Canberra."
    ids, start = encode(template, question, answer, max_length=256)
    assert tokenizer.decode(ids[:start]) == template.prompt(question)
    assert tokenizer.decode(ids[start:-1]) == answer
    assert ids[-1] == tokenizer.eos_token_id


def test_answer_start_with_merged_space_paper_template(tokenizer):
    # "### Answer: " ends in a space that BPE merges into the first answer word: the official
    # code's len(prompt)-1 then points one token off. The first answer token must be included.
    template = Template(tokenizer, "paper")
    ids, start = encode(template, "Who wrote Hamlet?", "Shakespeare wrote it.", max_length=256)
    assert tokenizer.decode(ids[start : start + 1]).strip().startswith("Sh")
    assert tokenizer.decode(ids[start - 1 : start]) == ":"
    assert tokenizer.decode(ids[start:-1]).strip() == "Shakespeare wrote it."


def test_labels_cover_answer_only(tokenizer):
    template = Template(tokenizer, "chat")
    a = encode(template, "Q one?", "Short.", 256)
    b = encode(template, "A much longer question about many things?", "A longer answer here.", 256)
    batch = collate([a, b], tokenizer.pad_token_id)
    for row, (ids, start) in enumerate([a, b]):
        labels = batch.labels[row].tolist()
        assert all(v == IGNORE for v in labels[:start])
        assert labels[start : len(ids)] == ids[start:]
        assert all(v == IGNORE for v in labels[len(ids) :])
        assert batch.attention_mask[row].sum() == len(ids)


def test_truncation_keeps_the_answer(tokenizer):
    template = Template(tokenizer, "chat")
    ids, start = encode(template, "word " * 300 + "?", "Keep me.", max_length=64)
    assert len(ids) == 64
    assert tokenizer.decode(ids[start:-1]) == "Keep me."


def test_sampler_mismatch_pairs_each_forget_question_with_k_pool_answers(tokenizer):
    data = TrainData(forget=[Pair(f"q{i}?", f"bad {i}") for i in range(4)],
                     normal=[Pair(f"n{i}?", f"good {i}") for i in range(4)],
                     mismatch_pool=[f"pool answer {i}" for i in range(10)])
    sampler = StepSampler(data, Template(tokenizer, "chat"), batch_size=2, seed=0,
                          uses=("forget", "mismatch", "normal"), mismatch_k=3)
    step = next(sampler)
    assert step.forget.input_ids.shape[0] == 2
    assert step.normal.input_ids.shape[0] == 2
    assert step.mismatch.input_ids.shape[0] == 6
    texts = [tokenizer.decode(row) for row in step.mismatch.input_ids]
    assert all("pool answer" in t for t in texts)


def test_sampler_is_deterministic_per_seed(tokenizer):
    data = TrainData(forget=[Pair(f"q{i}?", f"a{i}") for i in range(8)], normal=[], mismatch_pool=[])
    make = lambda seed: StepSampler(data, Template(tokenizer, "chat"), 2, seed, ("forget",))  # noqa: E731
    first = [next(make(1)).forget.input_ids.tolist() for _ in range(2)]
    assert first[0] == first[1]


def test_sampler_normal_batch_size_is_separate(tokenizer):
    data = TrainData(forget=[Pair(f"q{i}?", f"a{i}") for i in range(4)],
                     normal=[Pair(f"n{i}?", f"b{i}") for i in range(16)], mismatch_pool=[])
    step = next(StepSampler(data, Template(tokenizer, "chat"), 2, 0, ("forget", "normal"), normal_batch_size=8))
    assert step.forget.input_ids.shape[0] == 2 and step.normal.input_ids.shape[0] == 8
