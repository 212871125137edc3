from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from app.rag.errors import DocumentParseError
from app.rag.types import FileType
from ingest.formats import structured
from ingest.parsing import parse_document
from tests.parsed import checked_headings, parse_limited, text_lines

# A long value with no line break: it must reach the text whole, on its own line.
LONG_NOTE = "本制度适用于公司全体员工，" * 400


# --- JSON -----------------------------------------------------------------------------------------------


def test_json_object_reads_as_key_paths_with_a_section_per_nested_key() -> None:
    data = {
        "系统名称": "问答平台",
        "版本": 2.0,
        "标签": ["内部", "生产"],
        "数据库": {"主机": "db.example.cn", "端口": 5432, "选项": {"加密": True, "超时": None}},
        "员工": [{"姓名": "张三", "技能": ["Python", "SQL"]}, {"姓名": "李四", "备注": LONG_NOTE}],
    }

    document = parse_document(json.dumps(data, ensure_ascii=False).encode(), FileType.JSON)

    assert checked_headings(document) == [(1, "数据库"), (1, "员工")]
    assert document.title == ""
    assert text_lines(document) == [
        "系统名称: 问答平台",
        "版本: 2.0",
        "标签: 内部, 生产",
        "",
        "数据库",
        "",
        "数据库.主机: db.example.cn",
        "数据库.端口: 5432",
        "数据库.选项.加密: true",
        "数据库.选项.超时: null",
        "",
        "员工",
        "",
        "员工[0].姓名: 张三",
        "员工[0].技能: Python, SQL",
        "员工[1].姓名: 李四",
        f"员工[1].备注: {LONG_NOTE}",
    ]


def test_json_array_of_records_gives_each_record_a_titled_section() -> None:
    records = [{"编号": "A-01", "状态": "已完成"}, {"name": "Bob", "role": "admin"}, [1, {"深": "值"}]]

    document = parse_document(json.dumps(records, ensure_ascii=False).encode(), FileType.JSON)

    assert checked_headings(document) == [(1, "record 1: A-01"), (1, "record 2: Bob"), (1, "record 3")]
    assert "状态: 已完成" in text_lines(document)
    assert "[1].深: 值" in text_lines(document)


def test_json_nested_past_the_depth_bound_is_refused() -> None:
    data = ('{"层": ' * 100 + "1" + "}" * 100).encode()

    with pytest.raises(DocumentParseError, match="nested more than 64 levels"):
        parse_document(data, FileType.JSON)


def test_json_nested_past_the_interpreter_stack_is_refused_in_the_worker() -> None:
    data = b"[" * 200_000 + b"]" * 200_000

    with pytest.raises(DocumentParseError, match="nested too deeply"):
        parse_limited(data, FileType.JSON)


def test_values_over_the_budget_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structured, "MAX_VALUES", 10)
    data = json.dumps({f"键{n}": n for n in range(11)}, ensure_ascii=False).encode()

    with pytest.raises(DocumentParseError, match="more than 10 values"):
        parse_document(data, FileType.JSON)


def test_text_over_the_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structured, "MAX_TEXT_CHARS", 1000)

    with pytest.raises(DocumentParseError, match="longer than 1,000 characters"):
        parse_document(json.dumps({"备注": LONG_NOTE}, ensure_ascii=False).encode(), FileType.JSON)


# --- JSON Lines -----------------------------------------------------------------------------------------


def test_jsonl_records_become_sections_counted_from_one() -> None:
    lines = [
        {"姓名": "王芳", "部门": "财务部", "地址": {"城市": "上海"}},
        {"姓名": "赵强", "部门": "研发部"},
        "一条纯文本记录",
    ]
    data = "\n\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()

    document = parse_document(data, FileType.JSONL)

    assert checked_headings(document) == [(1, "record 1: 王芳"), (1, "record 2: 赵强"), (1, "record 3")]
    assert "地址.城市: 上海" in text_lines(document)
    assert "一条纯文本记录" in text_lines(document)


def test_jsonl_names_the_line_that_is_not_json() -> None:
    data = b'{"a": 1}\n{"b": 2}\n{"c": \n'

    with pytest.raises(DocumentParseError, match="line 3 of the JSON Lines file is not valid JSON"):
        parse_document(data, FileType.JSONL)


# --- YAML -----------------------------------------------------------------------------------------------


def test_yaml_with_anchors_and_merge_keys_reads_as_key_paths() -> None:
    text = (
        "名称: 订单服务\n"
        "默认: &defaults\n"
        "  超时: 30\n"
        "  重试: 3\n"
        "环境:\n"
        "  生产:\n"
        "    <<: *defaults\n"
        "    地址: https://orders.example.cn\n"
        "  测试: *defaults\n"
        "发布日期: 2024-10-08\n"
    )

    document = parse_document(text.encode(), FileType.YAML)

    assert checked_headings(document) == [(1, "默认"), (1, "环境")]
    assert text_lines(document)[:2] == ["名称: 订单服务", "发布日期: 2024-10-08"]
    assert "环境.生产.超时: 30" in text_lines(document)
    assert "环境.生产.地址: https://orders.example.cn" in text_lines(document)
    assert "环境.测试.重试: 3" in text_lines(document)


def test_yaml_stream_of_documents_gives_each_a_section() -> None:
    text = "kind: Deployment\nmetadata:\n  name: 网关\n---\nkind: Service\nname: 网关服务\nports: [80, 443]\n"

    document = parse_document(text.encode(), FileType.YAML)

    assert checked_headings(document) == [(1, "document 1"), (2, "metadata"), (1, "document 2: 网关服务")]
    assert "metadata.name: 网关" in text_lines(document)
    assert "ports: 80, 443" in text_lines(document)


def _billion_laughs_yaml() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _merge_key_bomb_yaml() -> str:
    # PyYAML releases before the fix of yaml/pyyaml#897 copy these pairs while building, before any code of
    # ours walks the result; the node graph is measured first, whatever the release.
    lines = ["a: &a {x: 1, y: 2}"]
    for level in range(1, 9):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} {{<<: [{', '.join([f'*{previous}'] * 9)}]}}")
    return "\n".join(lines) + "\n"


def test_pyyaml_safe_loader_itself_does_not_stop_alias_bombs() -> None:
    # Why we measure the node graph ourselves: the safe loader builds this without complaint (sharing, not
    # copying, each list), and anything that walks it meets 9^9 values.
    loaded = yaml.safe_load(_billion_laughs_yaml())
    assert loaded["i"][0] is loaded["i"][1]


@pytest.mark.parametrize("bomb", [_billion_laughs_yaml, _merge_key_bomb_yaml])
def test_yaml_alias_bombs_are_refused(bomb: Callable[[], str]) -> None:
    with pytest.raises(DocumentParseError, match="aliases"):
        parse_limited(bomb().encode(), FileType.YAML)


def test_yaml_alias_that_contains_itself_is_refused() -> None:
    with pytest.raises(DocumentParseError, match="nested more than 64 levels"):
        parse_document(b"&loop [*loop]\n", FileType.YAML)


# --- XML ------------------------------------------------------------------------------------------------

CATALOG = """<?xml version="1.0" encoding="UTF-8"?>
<目录 版本="3">
  <!-- 每季度更新 -->
  <更新日期>2024-10-08</更新日期>
  <book id="bk101">
    <author>王小波</author>
    <title>黄金时代</title>
    <price currency="CNY">39.80</price>
    <tag>小说</tag>
    <tag>经典</tag>
    <summary>一部关于<em>青春</em>与自由的小说。</summary>
  </book>
  <book id="bk102">
    <author>Ralls, Kim</author>
    <title>Midnight Rain</title>
  </book>
  <item><名称>甲</名称></item>
  <item><名称>乙</名称></item>
</目录>
"""


def test_xml_children_of_the_root_become_sections_of_paths() -> None:
    document = parse_document(CATALOG.encode(), FileType.XML)

    assert checked_headings(document) == [(1, "book id=bk101"), (1, "book id=bk102"), (1, "item 1"), (1, "item 2")]
    assert text_lines(document)[:2] == ["@版本: 3", "更新日期: 2024-10-08"]
    book = document.text[document.headings[0].start : document.headings[1].start].strip().split("\n")
    assert book == [
        "book id=bk101",
        "",
        "@id: bk101",
        "author: 王小波",
        "title: 黄金时代",
        "price@currency: CNY",
        "price: 39.80",
        "tag[0]: 小说",
        "tag[1]: 经典",
        "summary: 一部关于青春与自由的小说。",
    ]
    assert "名称: 乙" in text_lines(document)
    assert "每季度更新" not in document.text


def test_xml_in_a_declared_legacy_encoding() -> None:
    text = '<?xml version="1.0" encoding="GB18030"?>\n<通知><标题>放假安排</标题></通知>'

    assert parse_document(text.encode("gb18030"), FileType.XML).text == "标题: 放假安排"


def test_xml_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET-MARKER-91c2")
    for doctype in (
        f'<!DOCTYPE 数据 [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>',
        f'<!DOCTYPE 数据 [<!ENTITY % p SYSTEM "{secret.as_uri()}"> %p;]>',
        f'<!DOCTYPE 数据 SYSTEM "{secret.as_uri()}">',
        '<!DOCTYPE 数据 [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    ):
        data = f'<?xml version="1.0"?>{doctype}<数据><记录>&xxe;</记录><说明>正文</说明></数据>'.encode()
        try:
            text = parse_limited(data, FileType.XML).text
        except DocumentParseError as exc:
            text = exc.message
        assert "SECRET-MARKER" not in text
        assert "root:x:0:0" not in text


def test_xml_entity_reference_stays_as_written() -> None:
    data = (
        '<?xml version="1.0"?><!DOCTYPE 数据 [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<数据><记录>&xxe;</记录><说明>正文</说明></数据>"
    ).encode()

    assert text_lines(parse_document(data, FileType.XML)) == ["记录: &xxe;", "说明: 正文"]


def test_xml_billion_laughs_is_refused() -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    for body in ("<r><a>&lol9;</a></r>", '<r><a b="&lol9;">x</a></r>'):
        data = f'<?xml version="1.0"?><!DOCTYPE r [{entities}]>{body}'.encode()

        with pytest.raises(DocumentParseError):
            parse_limited(data, FileType.XML)


def test_xml_nested_past_the_depth_bound_is_refused() -> None:
    data = ("<层>" * 100 + "底" + "</层>" * 100).encode()

    with pytest.raises(DocumentParseError, match="nested more than 64 levels"):
        parse_document(data, FileType.XML)
