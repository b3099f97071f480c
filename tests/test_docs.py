"""Docs generated from code stay equal to it."""
import re
from pathlib import Path

from lab.cli.fault import fault_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_fault_table_is_the_generated_one():
    text = README.read_text()
    block = re.search(r"<!-- fault-table:start[^>]*-->\n(.*?)\n<!-- fault-table:end -->", text, re.S)
    assert block, "README lost its fault table markers"
    assert block.group(1).strip() == fault_table().strip(), "run `mdmlab fault table` and paste it into README.md"
