"""The classic-BPF assembler: labels, far jumps through trampolines, limits, encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seccomp.bpf import (
    AssemblyError,
    Goto,
    Item,
    Jump,
    Label,
    ProgramTooLongError,
    Statement,
    assemble,
    goto,
    jump_if_any_bit,
    jump_if_equal,
    jump_if_greater,
    jump_if_greater_or_equal,
    load_word,
    ret,
)
from tests.bpf_interpreter import SeccompData, decode, run

NR, ARCH = 0, 4
JA_CODE = 0x05  # BPF_JMP | BPF_JA


def run_assembled(items: list[Item], nr: int, arch: int = 0) -> int:
    return run(assemble(items).to_bytes(), SeccompData(nr=nr, arch=arch)).verdict


def run_source(items: list[Item], nr: int, arch: int = 0) -> int:
    """Execute the item list directly, following labels by name: the meaning of the source."""
    code: list[Statement | Jump | Goto] = []
    position: dict[str, int] = {}
    for item in items:
        if isinstance(item, Label):
            position[item.name] = len(code)
        else:
            code.append(item)
    fields = {NR: nr, ARCH: arch}
    accumulator, pc = 0, 0
    while True:
        item = code[pc]
        if isinstance(item, Goto):
            pc = position[item.target]
        elif isinstance(item, Jump):
            holds = {
                0x15: accumulator == item.k,
                0x25: accumulator > item.k,
                0x35: accumulator >= item.k,
                0x45: accumulator & item.k != 0,
            }[item.code]
            target = item.if_true if holds else item.if_false
            pc = pc + 1 if target is None else position[target]
        elif item.code == 0x06:
            return item.k
        else:
            accumulator = fields[item.k]
            pc += 1


def test_encoding_is_struct_sock_filter() -> None:
    program = assemble([load_word(NR), jump_if_equal(7, "seven"), ret(1), Label("seven"), ret(2)])
    raw = program.to_bytes()
    assert len(raw) == 8 * len(program)
    decoded = decode(raw)
    assert [(i.code, i.jt, i.jf, i.k) for i in decoded] == [
        (i.code, i.jt, i.jf, i.k) for i in program.instructions
    ]
    # jeq 7 skips exactly the one `ret 1` when true, falls through when false.
    assert (decoded[1].code, decoded[1].jt, decoded[1].jf, decoded[1].k) == (0x15, 1, 0, 7)


@pytest.mark.parametrize("nr", [6, 7, 8])
def test_labels_route_each_branch(nr: int) -> None:
    items: list[Item] = [
        load_word(NR),
        jump_if_greater_or_equal(8, "high"),
        jump_if_equal(7, "seven", "low"),
        Label("seven"),
        ret(70),
        Label("low"),
        ret(60),
        Label("high"),
        ret(80),
    ]
    expected = {6: 60, 7: 70, 8: 80}[nr]
    assert run_assembled(items, nr) == expected


def _far(distance: int, jump: Jump) -> list[Item]:
    """`jump` followed by `distance` filler instructions before its labels."""
    return [
        load_word(NR),
        jump,
        *[load_word(NR)] * distance,
        ret(1),
        Label("yes"),
        ret(2),
        Label("no"),
        ret(3),
    ]


@pytest.mark.parametrize(
    "jump",
    [
        jump_if_equal(5, "yes"),
        jump_if_equal(5, "yes", "no"),
        jump_if_equal(5, None, "no"),
        jump_if_greater(4, "no", "yes"),
    ],
)
@pytest.mark.parametrize("distance", [253, 254, 255, 256, 1000])
def test_far_conditional_jumps_keep_their_meaning(jump: Jump, distance: int) -> None:
    items = _far(distance, jump)
    program = assemble(items)
    assert all(i.jt <= 255 and i.jf <= 255 for i in program.instructions)
    for nr in (4, 5, 6):
        assert run_assembled(items, nr) == run_source(items, nr)


def test_trampolines_appear_only_when_needed() -> None:
    near = assemble(_far(200, jump_if_equal(5, "yes", "no")))
    far = assemble(_far(400, jump_if_equal(5, "yes", "no")))
    assert not any(i.code == JA_CODE for i in near.instructions)
    assert sum(i.code == JA_CODE for i in far.instructions) == 2
    assert len(far) == len(near) + 200 + 2


@st.composite
def programs(draw: st.DrawFn) -> list[Item]:
    """Blocks of filler with jumps to later blocks; the distances straddle the 255 limit."""
    count = draw(st.integers(2, 10))
    items: list[Item] = []
    for index in range(count):
        items.append(Label(f"b{index}"))
        filler = draw(st.sampled_from([0, 1, 2, 100, 250, 256, 300]))
        items += [load_word(draw(st.sampled_from([NR, ARCH])))] * filler
        later = st.none() | st.integers(index + 1, count - 1).map(lambda i: f"b{i}")
        kind = draw(st.sampled_from(["jeq", "jgt", "jge", "jset", "ja", "ret"]))
        if index == count - 1 or kind == "ret":
            items.append(ret(index))
            continue
        if kind == "ja":
            items.append(goto(f"b{draw(st.integers(index + 1, count - 1))}"))
            continue
        make = {
            "jeq": jump_if_equal,
            "jgt": jump_if_greater,
            "jge": jump_if_greater_or_equal,
            "jset": jump_if_any_bit,
        }[kind]
        items.append(make(draw(st.integers(0, 8)), draw(later), draw(later)))
    return items


@given(programs(), st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1))
def test_assembled_program_does_what_the_source_says(
    items: list[Item], inputs: list[tuple[int, int]]
) -> None:
    for nr, arch in inputs:
        assert run_assembled(items, nr, arch) == run_source(items, nr, arch)


def test_program_at_the_limit_assembles_and_one_more_is_refused() -> None:
    assert len(assemble([*[load_word(NR)] * 4095, ret(0)])) == 4096
    with pytest.raises(ProgramTooLongError, match=r"4097 instructions.*4096"):
        assemble([*[load_word(NR)] * 4096, ret(0)])


def test_trampolines_can_push_a_program_over_the_limit() -> None:
    items: list[Item] = [load_word(NR)]
    items += [jump_if_equal(k, "end", "end") for k in range(20)]
    items += [load_word(NR)] * (4096 - 22)
    items += [Label("end"), ret(0)]
    assert len([i for i in items if not isinstance(i, Label)]) == 4096
    with pytest.raises(ProgramTooLongError):
        assemble(items)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "empty"),
        ([load_word(NR)], "must end with a ret"),
        ([load_word(NR), goto("nowhere"), ret(0)], "undefined label 'nowhere'"),
        ([Label("a"), load_word(NR), Label("a"), ret(0)], "'a' is defined twice"),
        ([Label("top"), load_word(NR), jump_if_equal(1, "top"), ret(0)], "backwards"),
        (
            [load_word(NR), jump_if_equal(1, "here"), Label("here"), ret(0), Label("end")],
            "at the end",
        ),
    ],
)
def test_malformed_sources_get_one_clear_error(items: list[Item], message: str) -> None:
    with pytest.raises(AssemblyError, match=message) as raised:
        assemble(items)
    assert "\n" not in str(raised.value)


def test_operands_must_fit_32_bits() -> None:
    with pytest.raises(AssemblyError, match="32 bits"):
        jump_if_equal(1 << 32)
    with pytest.raises(AssemblyError, match="32 bits"):
        ret(-1)
    assert Statement(0x06, 0xFFFF_FFFF) == ret(0xFFFF_FFFF)
