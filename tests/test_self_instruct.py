"""Self-Instruct prompts, parsing and filters on recorded teacher answers."""

import random
import re
from collections import Counter
from pathlib import Path

from app.data.self_instruct import (
    InstructionFilter,
    classification_prompt,
    clean_instances,
    instance_prompt,
    instruction_prompt,
    load_seeds,
    parse_instances,
    parse_instructions,
    parse_yes_no,
    rejection_reason,
)

FIX = Path(__file__).parent / "fixtures" / "selfinstruct"
SEEDS = load_seeds()


def test_instruction_prompt_uses_six_seeds_then_two_generated():
    rng = random.Random(1)
    seed_set = {s.instruction for s in SEEDS}
    first = instruction_prompt(SEEDS, [], rng)
    items = re.findall(r"^\d+\. (.*)$", first, re.M)
    assert len(items) == 8 and all(i in seed_set for i in items)
    assert first.endswith("\n9.")
    generated = ["Invent a board game for two players.", "Name three uses for a paperclip."]
    later = re.findall(r"^\d+\. (.*)$", instruction_prompt(SEEDS, generated, rng), re.M)
    assert sorted(set(later) - seed_set) == sorted(generated)
    assert len(later) == 8


def test_parse_continuation_drops_truncated_last_item():
    items = parse_instructions((FIX / "instructions_ok.txt").read_text(), truncated=True)
    assert items[0] == "Suggest five names for a golden retriever puppy."
    assert items[1] == "Give tips for negotiating a higher salary."
    assert len(items) == 10  # 11 numbered items, the cut-off 19th dropped
    assert not any(i.startswith("Write a short speech") for i in items)


def test_parse_accepts_varied_numbering():
    items = parse_instructions((FIX / "instructions_renumbered.txt").read_text())
    assert items == [
        "List three benefits of learning a second language.",
        "Give a recipe for a simple tomato soup.",
        "Summarize the causes of the First World War in two sentences.",
    ]


def test_every_filter_on_recorded_output():
    f = InstructionFilter.with_seeds(SEEDS)
    items = parse_instructions((FIX / "instructions_ok.txt").read_text(), truncated=True)
    kept = [i for i in items if f.offer(i)]
    assert kept == [
        "Suggest five names for a golden retriever puppy.",
        "Give tips for negotiating a higher salary.",
        "Describe the rules of chess to someone who has never played.",
    ]
    assert f.rejected == Counter(
        blacklist=2, program=1, too_short=1, punctuation_start=1, similar=1, non_ascii_start=1
    )
    assert rejection_reason(" ".join(["word"] * 151)) == "too_long"
    assert rejection_reason(" ".join(["word"] * 150)) is None
    assert rejection_reason("Go to the store and buy milk.") == "blacklist"
    assert rejection_reason("Describe a paragraph about a mapping of genes.") is None  # whole words only
    assert rejection_reason("Create a weekly class schedule for a teacher.") is None


def test_classification_prompt_and_answer():
    prompt = classification_prompt("Is the fruit ripe or unripe?", SEEDS, random.Random(0))
    assert prompt.count("Is it classification? Yes") == 4
    assert prompt.count("Is it classification? No") == 4
    assert prompt.endswith("Task: Is the fruit ripe or unripe?\nIs it classification?")
    assert parse_yes_no(" Yes, it has two labels.") and parse_yes_no("yes")
    assert not parse_yes_no("No.") and not parse_yes_no("")


def test_instance_prompts_are_output_first_for_classification():
    rng = random.Random(0)
    cls = instance_prompt("Classify the mood of the song title.", True, SEEDS, rng)
    assert "Class label:" in cls and "Output:" not in cls
    assert cls.index("Class label:") < cls.index("Input:")
    gen = instance_prompt("Write a riddle about time.", False, SEEDS, rng)
    assert "Class label:" not in gen and "Output:" in gen
    assert gen.rstrip().endswith("Task: Write a riddle about time.")


def test_input_first_instances_are_parsed_and_cleaned():
    pairs = parse_instances((FIX / "instance_input_first.txt").read_text(), False)
    assert len(pairs) == 4  # the extra 'Task:' the teacher went on to is ignored
    rejected: Counter = Counter()
    kept = clean_instances(pairs, rejected)
    assert kept == [("The meeting is at noon.", "La reunión es al mediodía.")]
    assert rejected == Counter(input_equals_output=1, empty_output=1, duplicate_instance=1)


def test_no_input_instance_keeps_multiline_output():
    pairs = parse_instances((FIX / "instance_no_input.txt").read_text(), False)
    assert pairs == [("", "1. Read for twenty minutes before bed.\n2. Carry a book everywhere.\n"
                          "3. Join a book club.")]


def test_output_first_instances_drop_conflicting_labels():
    pairs = parse_instances((FIX / "instance_output_first.txt").read_text(), True)
    assert [out for _, out in pairs] == ["Positive", "Negative", "Neutral", "Positive"]
    rejected: Counter = Counter()
    kept = clean_instances(pairs, rejected)
    assert [out for _, out in kept] == ["Positive", "Negative"]
    assert rejected == Counter(conflicting_outputs=2)


def test_own_seed_tasks_are_read_line_by_line_and_bad_lines_are_named():
    import pytest

    from app.core.errors import InvalidInput
    from app.data.self_instruct import MAX_SEED_CHARS, choose_seeds, parse_seed_text

    text = ('Name  three   rivers in Europe.\n\n'
            '{"instruction": "Is the review positive?", "input": "Great!", "output": "Yes", '
            '"is_classification": true}\n')
    plain, js = parse_seed_text(text)
    assert plain.instruction == "Name three rivers in Europe." and plain.output == ""
    assert js.is_classification and (js.input, js.output) == ("Great!", "Yes")
    for bad, message in (("ok line\n{broken", "seed line 2 is not valid JSON"),
                         ('{"input": "x"}', "seed line 1 has no instruction"),
                         ('["a list"]', "seed line 1 has no instruction"),
                         ("x" * (MAX_SEED_CHARS + 1), "seed line 1 is longer than")):
        with pytest.raises(InvalidInput, match=message):
            parse_seed_text(bad)
    with pytest.raises(InvalidInput, match="MB of text"):
        parse_seed_text("a task to do\n" * 500_000)
    # the same task twice counts once; the shipped seeds and yours mix
    with pytest.raises(InvalidInput, match=r"at least 8 different seed tasks .*, got 1$"):
        choose_seeds("Same task here.\nsame task HERE.", use_shipped=False)
    both = choose_seeds("Name three rivers in Europe.", use_shipped=True)
    assert both[-1].instruction == "Name three rivers in Europe." and len(both) > 100


def test_examples_in_instance_prompts_have_outputs():
    import random

    from app.data.self_instruct import Task, instance_prompt

    seeds = [Task(f"Plain task number {i}.") for i in range(8)] + [Task("Add two numbers.", "2, 3", "5")]
    prompt = instance_prompt("Subtract the numbers.", False, seeds, random.Random(0))
    assert "Add two numbers." in prompt and "Plain task number" not in prompt
