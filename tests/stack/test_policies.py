"""Key policies from stacks: where problems are reported, and how files are shared."""

from __future__ import annotations

from stack_helpers import Write

from kmsplan.stack import load_stack

HEADER = 'version: 1\nstack: s\naccount: "111122223333"\nregion: eu-west-1\n'
ROOT = ('{"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},'
        ' "Action": "kms:*", "Resource": "*"}')


def found(findings: list) -> list[tuple[str, int, int, str]]:
    return [(f.file.rsplit("/", 1)[-1], f.line, f.col, f.code) for f in findings]


def test_json_the_yaml_reader_cannot_read_reports_at_each_reference(write: Write) -> None:
    # a surrogate-pair escape is valid JSON that libyaml rejects: no positions inside the file
    write("p.json", '{"Version": "2012-10-17", "Id": "\\ud83d\\ude00", "Statement": ['
                    + ROOT + ', {"Effect": "Allow", "Principal": "*", "Action": "kms:Nope",'
                    ' "Resource": "*"}]}')
    stack = write("stack.yaml", HEADER + "keys:\n  a: {policy_file: p.json}\n"
                                         "  b: {policy_file: p.json}\n")
    _, findings = load_stack([stack])
    assert found(findings) == [("stack.yaml", 6, 20, "E700"), ("stack.yaml", 7, 20, "E700")]
    assert "policy_file (p.json)" in findings[0].message and "[P042]" in findings[0].message


def test_duplicate_fields_in_a_json_policy(write: Write) -> None:
    write("p.json", '{"Version": "2012-10-17", "Version": "2012-10-17", "Statement": [' + ROOT
          + "]}")
    _, findings = load_stack([write("stack.yaml", HEADER + "keys:\n  a: {policy_file: p.json}\n")])
    assert found(findings) == [("p.json", 1, 27, "E104")]


def test_a_yaml_policy_in_the_stack_folder_is_not_a_stack_file(write: Write) -> None:
    write("policies/key.yaml", "Version: '2012-10-17'\nStatement:\n  - " + ROOT + "\n")
    stack_file = write("stack.yaml", HEADER + "keys:\n  a: {policy_file: policies/key.yaml}\n")
    stack, findings = load_stack([stack_file.parent])
    assert findings == [] and stack is not None
    assert stack.files == (str(stack_file),)
    assert stack.key("a").policy is not None


def test_an_inherited_policy_problem_is_reported_once(write: Write) -> None:
    text = HEADER + (
        "keys:\n  a:\n    multi_region: true\n    policy:\n      Version: '2012-10-17'\n"
        "      Statement:\n        - {Effect: Allow, Principal: '*', Action: kms:Decrypt,"
        " Resource: '*'}\n    replicas:\n      eu-central-1: {}\n      us-east-1: {}\n")
    _, findings = load_stack([write("stack.yaml", text)])
    assert found(findings) == [("stack.yaml", 8, 5, "W701"), ("stack.yaml", 11, 11, "W700")]


def test_the_aws_default_policy_raises_no_warning(write: Write) -> None:
    stack, findings = load_stack([write("stack.yaml", HEADER + "keys:\n  a:\n")])
    assert findings == [] and stack is not None and stack.key("a").policy is None
