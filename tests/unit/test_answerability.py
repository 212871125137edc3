from __future__ import annotations

from app.rag.answerability import named_things, unmentioned_names


def test_names_are_latin_words_in_chinese_and_technical_words_in_english() -> None:
    assert named_things("怎样把 U 盘格式化成 exFAT？") == ["exFAT"]
    assert named_things("在 Debian 上 rsyncd 默认监听哪个端口？") == ["Debian", "rsyncd"]
    assert named_things("How do I create a repository that uses SHA-256 object names?") == ["SHA-256"]
    assert named_things("How can I stop Git asking for my password over HTTPS?") == ["HTTPS"]
    # Plain English words, and single letters in Chinese, name nothing in particular.
    assert named_things("Which web server does git instaweb use by default?") == []
    assert named_things("C 语言环境是什么？") == []


def test_a_question_about_something_no_passage_mentions_is_flagged() -> None:
    passages = ["mkfs.vfat 创建 FAT 文件系统。", "微软不建议在超过 200MB 的分区上使用 FAT。"]
    assert unmentioned_names("怎样把 U 盘格式化成 exFAT？", passages) == ["exFAT"]
    assert unmentioned_names("怎样用 mkfs.vfat 格式化 FAT？", passages) == []


def test_matching_ignores_case_and_punctuation_but_short_names_must_stand_alone() -> None:
    assert unmentioned_names("How do I GPG-sign a commit?", ["Sign it: gpg --sign file"]) == []
    assert unmentioned_names("Is SHA256 supported?", ["Objects are named by SHA-256 hashes."]) == []
    assert unmentioned_names("What RSA key size is the default?", ["The output is parsable."]) == ["RSA"]
    assert unmentioned_names("What RSA key size is the default?", ["An RSA key of 3072 bits."]) == []
