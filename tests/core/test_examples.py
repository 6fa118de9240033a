import re

from ccapo.examples import load_examples


def test_examples_load_with_answers() -> None:
    examples = load_examples()
    assert len(examples) == 4
    for trace in examples:
        assert isinstance(trace.prompt, str) and trace.prompt.endswith("?")
        last_line = trace.completion.splitlines()[-1]
        match = re.fullmatch(r"#### (\S+)", last_line) or re.search(r"\\boxed\{([^}]*)\}$", last_line)
        assert match is not None, last_line
        assert match.group(1) == trace.reference_answer
    assert any("\\boxed{" in trace.completion for trace in examples)
