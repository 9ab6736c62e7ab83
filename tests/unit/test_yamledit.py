"""yamledit: each edit changes only the characters it must, in any YAML style we meet."""

from __future__ import annotations

import pytest
import yaml

from backhaul import yamledit


def _root(text: str) -> yaml.MappingNode:
    return yaml.compose(text)


def _set_wg(text: str, index: int, value: str = "10.50.0.9") -> str:
    root = _root(text)
    backends = dict((k.value, v) for k, v in root.value)["backends"]
    return yamledit.apply(text, yamledit.set_key(text, backends.value[index], "wg_ip", value))


def _append(text: str) -> str:
    root = _root(text)
    fields = [("name", "new"), ("public_ip", "203.0.113.99"), ("wg_ip", "10.50.0.9")]
    out = yamledit.apply(text, yamledit.append_item(text, root, "backends", fields))
    assert yaml.safe_load(out)["backends"][-1] == dict(fields)
    return out


def _remove(text: str, index: int) -> str:
    return yamledit.apply(text, yamledit.remove_item(text, _root(text), "backends", index))


# -- set_key ----------------------------------------------------------------------------------


def test_set_key_block_goes_after_last_key_keeping_comments() -> None:
    text = (
        "backends:\n"
        "  - name: web        # the web box\n"
        "    public_ip: 203.0.113.21   # static\n"
        "    # more backends below\n"
        "  - name: db\n"
        "    public_ip: 203.0.113.22\n"
        "\n"
        "# Services\n"
        "services: []\n"
    )
    assert _set_wg(text, 0) == text.replace("   # static\n", "   # static\n    wg_ip: 10.50.0.9\n")
    assert _set_wg(text, 1) == text.replace("203.0.113.22\n", "203.0.113.22\n    wg_ip: 10.50.0.9\n")


def test_set_key_uses_the_mappings_own_indentation() -> None:
    text = "backends:\n-   name: web\n    public_ip: 203.0.113.21\n"
    assert _set_wg(text, 0) == text + "    wg_ip: 10.50.0.9\n"


def test_set_key_at_end_of_file_without_newline() -> None:
    text = "backends:\n  - name: web\n    public_ip: 203.0.113.21"
    assert _set_wg(text, 0) == text + "\n    wg_ip: 10.50.0.9\n"


def test_set_key_keeps_crlf() -> None:
    text = "backends:\r\n  - name: web\r\n    public_ip: 203.0.113.21\r\nservices: []\r\n"
    assert _set_wg(text, 0) == text.replace("21\r\n", "21\r\n    wg_ip: 10.50.0.9\r\n")


def test_set_key_flow_mapping() -> None:
    text = "backends:\n  - {name: web, public_ip: 203.0.113.21 }  # flow\n"
    assert _set_wg(text, 0) == (
        "backends:\n  - {name: web, public_ip: 203.0.113.21, wg_ip: 10.50.0.9 }  # flow\n"
    )
    text = "backends: [{name: web,\n  public_ip: 203.0.113.21}]\n"
    assert _set_wg(text, 0) == ("backends: [{name: web,\n  public_ip: 203.0.113.21, wg_ip: 10.50.0.9}]\n")


def test_set_key_empty_flow_mapping() -> None:
    text = "backends: [{}]\n"
    assert _set_wg(text, 0) == "backends: [{wg_ip: 10.50.0.9}]\n"


@pytest.mark.parametrize("null", ["", " null", " ~", " Null"])
def test_set_key_fills_a_null_value_in_place(null: str) -> None:
    text = f"backends:\n  - name: web\n    wg_ip:{null}   # allocate\n    public_ip: 203.0.113.21\n"
    assert _set_wg(text, 0) == (
        "backends:\n  - name: web\n    wg_ip: 10.50.0.9   # allocate\n    public_ip: 203.0.113.21\n"
    )


def test_set_key_refuses_to_overwrite_a_value() -> None:
    text = "backends:\n  - name: web\n    wg_ip: 10.50.0.2\n"
    with pytest.raises(ValueError):
        _set_wg(text, 0)


def test_set_key_after_a_block_scalar() -> None:
    text = "backends:\n  - name: web\n    ssh_host: |\n      web.example.com\n\nservices: []\n"
    out = _set_wg(text, 0)
    assert yaml.safe_load(out)["backends"][0]["wg_ip"] == "10.50.0.9"
    assert out.endswith("services: []\n")


# -- append_item -------------------------------------------------------------------------------

NEW_BLOCK = "  - name: new\n    public_ip: 203.0.113.99\n    wg_ip: 10.50.0.9\n"


def test_append_block_after_last_item_before_next_sections_comment() -> None:
    text = "backends:\n  - name: web\n    public_ip: 203.0.113.21  # keep me\n\n# Services\nservices: []\n"
    assert _append(text) == text.replace("# keep me\n", "# keep me\n" + NEW_BLOCK)


def test_append_block_copies_dash_and_key_indentation() -> None:
    text = "backends:\n- name: web\n  public_ip: 203.0.113.21\n"
    assert _append(text) == text + "- name: new\n  public_ip: 203.0.113.99\n  wg_ip: 10.50.0.9\n"
    text = "backends:\n    -   name: web\n        public_ip: 203.0.113.21\n"
    assert _append(text) == text + (
        "    -   name: new\n        public_ip: 203.0.113.99\n        wg_ip: 10.50.0.9\n"
    )


def test_append_after_a_flow_item_in_a_block_list() -> None:
    text = "backends:\n  - {name: web, public_ip: 203.0.113.21}  # one\nservices: []\n"
    assert _append(text) == text.replace("# one\n", "# one\n" + NEW_BLOCK)


def test_append_flow_list() -> None:
    text = "backends: [{name: web, public_ip: 203.0.113.21}]  # all\n"
    assert _append(text) == (
        "backends: [{name: web, public_ip: 203.0.113.21}, "
        "{name: new, public_ip: 203.0.113.99, wg_ip: 10.50.0.9}]  # all\n"
    )


@pytest.mark.parametrize("empty", [" []", " null", " ~", "", "  [ ]"])
def test_append_to_empty_list_becomes_block_and_keeps_comment(empty: str) -> None:
    text = f"proxy:\n  public_ip: 203.0.113.10\nbackends:{empty}  # none yet\nservices: []\n"
    assert _append(text) == (
        "proxy:\n  public_ip: 203.0.113.10\nbackends:  # none yet\n" + NEW_BLOCK + "services: []\n"
    )


def test_append_creates_missing_key_after_the_last_section() -> None:
    text = "network:\n  subnet: 10.50.0.0/24  # wg\nproxy:\n  public_ip: 203.0.113.10\n# end\n"
    assert _append(text) == text.replace("203.0.113.10\n", "203.0.113.10\nbackends:\n" + NEW_BLOCK)


def test_append_flow_root() -> None:
    text = "{proxy: {public_ip: 203.0.113.10}}\n"
    assert _append(text) == (
        "{proxy: {public_ip: 203.0.113.10}, backends: "
        "[{name: new, public_ip: 203.0.113.99, wg_ip: 10.50.0.9}]}\n"
    )
    text = "{proxy: {public_ip: 203.0.113.10}, backends: []}\n"
    assert _append(text) == (
        "{proxy: {public_ip: 203.0.113.10}, backends: "
        "[{name: new, public_ip: 203.0.113.99, wg_ip: 10.50.0.9}]}\n"
    )


def test_append_keeps_crlf() -> None:
    text = "backends:\r\n  - name: web\r\n    public_ip: 203.0.113.21\r\n"
    assert _append(text) == text + NEW_BLOCK.replace("\n", "\r\n")


# -- remove_item -------------------------------------------------------------------------------

THREE = (
    "backends:\n"
    "  # web first\n"
    "  - name: web\n"
    "    public_ip: 203.0.113.21  # web's\n"
    "  - name: db   # the database\n"
    "    # its address:\n"
    "    public_ip: 203.0.113.22\n"
    "  - name: cache\n"
    "    public_ip: 203.0.113.23\n"
    "\n"
    "services: []\n"
)


def test_remove_middle_item_takes_only_its_lines() -> None:
    assert _remove(THREE, 1) == THREE.replace(
        "  - name: db   # the database\n    # its address:\n    public_ip: 203.0.113.22\n", ""
    )


def test_remove_first_and_last_items_keep_surrounding_comments() -> None:
    assert _remove(THREE, 0) == THREE.replace("  - name: web\n    public_ip: 203.0.113.21  # web's\n", "")
    assert _remove(THREE, 2) == THREE.replace("  - name: cache\n    public_ip: 203.0.113.23\n", "")


def test_remove_only_item_leaves_an_empty_list() -> None:
    text = "backends:   # spokes\n  - name: web\n    public_ip: 203.0.113.21\nservices: []\n"
    out = _remove(text, 0)
    assert out == "backends: []   # spokes\nservices: []\n"
    assert yaml.safe_load(out)["backends"] == []


def test_remove_item_whose_dash_is_on_its_own_line() -> None:
    text = "backends:\n  -\n    name: web\n    public_ip: 203.0.113.21\n  - name: db\n"
    assert _remove(text, 0) == "backends:\n  - name: db\n"


def test_remove_flow_items() -> None:
    text = "backends: [{name: a}, {name: b}, {name: c}]\n"
    assert _remove(text, 0) == "backends: [{name: b}, {name: c}]\n"
    assert _remove(text, 1) == "backends: [{name: a}, {name: c}]\n"
    assert _remove(text, 2) == "backends: [{name: a}, {name: b}]\n"
    assert _remove("backends: [{name: a}]\n", 0) == "backends: []\n"


# -- scalar and apply --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("backend-1", "backend-1"),
        ("203.0.113.21", "203.0.113.21"),
        ("2001:db8::1", "2001:db8::1"),
        ("123", "'123'"),
        ("true", "'true'"),
        ("null", "'null'"),
        ("", "''"),
        ("a: b", "'a: b'"),
        ("it's", "'it''s'"),
        ("#x", "'#x'"),
        ("-x", "'-x'"),
    ],
)
def test_scalar(value: str, expected: str) -> None:
    assert yamledit.scalar(value) == expected
    assert yaml.safe_load(f"k: {yamledit.scalar(value)}")["k"] == value
    assert yaml.safe_load(f"k: [{yamledit.scalar(value)}]")["k"] == [value]


def test_apply_rejects_overlapping_edits() -> None:
    with pytest.raises(ValueError):
        yamledit.apply("abcdef", [yamledit.Edit(0, 3, "x"), yamledit.Edit(2, 4, "y")])


def test_apply_applies_edits_in_any_order() -> None:
    edits = [yamledit.Edit(4, 4, "!"), yamledit.Edit(0, 1, "A")]
    assert yamledit.apply("abcdef", edits) == "Abcd!ef"


# -- one engine for both writers: the rules compose.py's planner pinned --------------------


def test_set_key_after_an_alias_goes_on_the_aliased_keys_line() -> None:
    # The alias's node is the anchored one, whose text is far above: the new line must follow
    # `extra: *d`, not the anchored mapping's last line.
    text = "defaults: &d\n  x: 1\nbackends:\n  - name: web\n    extra: *d\nservices: []\n"
    out = _set_wg(text, 0)
    assert out == text.replace("    extra: *d\n", "    extra: *d\n    wg_ip: 10.50.0.9\n")


def test_append_after_a_block_scalar_keeps_its_kept_blank_lines() -> None:
    text = "backends:\n  - name: web\n    note: |+\n      hi\n\nservices: []\n"
    out = _append(text)
    assert out.startswith("backends:\n  - name: web\n    note: |+\n      hi\n\n  - name: new\n")


def test_apply_counts_an_edit_reached_twice_once() -> None:
    # the planner reaches a node twice through an alias and asks for the same edit twice
    edit = yamledit.Edit(1, 2, "X")
    assert yamledit.apply("abc", [edit, edit]) == "aXc"


def test_apply_deletes_before_inserting_at_the_same_place() -> None:
    edits = [yamledit.Edit(3, 6, ""), yamledit.Edit(3, 3, "new")]
    assert yamledit.apply("abcdefgh", edits) == "abcnewgh"


@pytest.mark.parametrize(
    ("value", "flow", "plain"),
    [
        ("10.50.0.2:${PORT}:80", False, True),  # a compose port with a variable, block style
        ("10.50.0.2:${PORT}:80", True, False),  # ... and in a flow list, where `{` ends it
        ("a,b", False, True),
        ("a,b", True, False),
        ("8080", False, False),  # reads back as a number
        ("22:22", False, False),  # YAML 1.1 reads it as base 60
        ("x #y", False, False),
    ],
)
def test_plain_ok_one_rule_for_both_writers(value: str, flow: bool, plain: bool) -> None:
    assert yamledit.plain_ok(value, flow) is plain


def test_scalar_quotes_in_the_asked_style() -> None:
    assert yamledit.scalar("8080", quote='"') == '"8080"'
    assert yamledit.scalar('a"b', quote='"') == '"a\\"b"'
    assert yamledit.scalar("it's") == "'it''s'"


def test_describe_names_what_a_node_is() -> None:
    root = _root("a: x\nb: ~\nc: [1]\nd: 3\n")
    described = [yamledit.describe(v) for _, v in root.value]
    assert described == ["a string 'x'", "nothing (null)", "a list", "a number 3"]
