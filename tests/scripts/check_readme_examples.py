#!/usr/bin/env python3
"""The README's C++ examples are the code that runs: every block of an example file between
`// [readme: NAME]` and `// [readme: end]` must appear in one of the README's ```cpp blocks, as
written up to indentation and runs of spaces (clang-format aligns trailing comments, and a
block may sit inside a function in the README).

    check_readme_examples.py README.md examples/flex_attention/flex_attention.cpp
"""
import re
import sys
import textwrap


def main():
    readme, *sources = sys.argv[1:]
    blocks = re.findall(r"```cpp\n(.*?)```", open(readme, encoding="utf-8").read(), re.S)
    missing = 0
    for path in sources:
        text = open(path, encoding="utf-8").read()
        found = re.findall(r"// \[readme: ([^\]]+)\]\n(.*?)^\s*// \[readme: end\]", text, re.S | re.M)
        if not found:
            print(f"{path}: no [readme: ...] blocks")
            return 1
        for name, body in found:
            snippet = textwrap.dedent(body)
            squeeze = lambda t: re.sub(r"(?m)^ +", "", re.sub(r" +", " ", t))  # noqa: E731
            if not any(squeeze(snippet) in squeeze(b) for b in blocks):
                print(f"{path}: block '{name}' is not in {readme} as written:\n{snippet}")
                missing += 1
            else:
                print(f"{path}: '{name}' ok")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
