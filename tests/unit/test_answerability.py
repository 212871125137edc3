from __future__ import annotations

from app.rag.answerability import named_things, unmentioned_names


def test_names_are_latin_words_in_chinese_and_technical_words_in_english() -> None:
    assert named_things("怎样把 U 盘格式化成 exFAT？") == ["exFAT"]
    assert named_things("在 Debian 上 rsyncd 默认监听哪个端口？") == ["Debian", "rsyncd"]
    assert named_things("How do I create a repository that uses SHA-256 object names?") == ["SHA-256"]
    assert named_things("How can I stop Git asking for my password over HTTPS?") == ["HTTPS"]
    # Plain English words, and single letters in Chinese, name nothing in particular.
    assert named_things("How long should the summary line of a commit message be?") == []
    assert named_things("Where on disk does Git keep the index (staging area)?") == []
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


def test_english_names_are_mixed_case_words_and_words_english_hardly_uses() -> None:
    # The probe's questions: generation ran for two minutes before the refusal.
    assert named_things("How do I format the backup disk as exFAT?") == ["exFAT"]
    assert named_things("How do I configure rsyncd?") == ["rsyncd"]
    assert named_things("Which web server does git instaweb use by default?") == ["instaweb"]
    assert named_things("How do I set up GitHub Actions with kubectl?") == ["GitHub", "kubectl"]
    # Ordinary words, however technical, and a capital that only starts a sentence, are not names.
    assert named_things("Format the backup repository before you commit and configure the server.") == []
    git_passages = ["git branch -D deletes a branch.", "The daemon listens on port 9418."]
    assert unmentioned_names("How do I format the backup disk as exFAT?", git_passages) == ["exFAT"]
    assert unmentioned_names("How do I configure rsyncd?", ["rsync copies files."]) == ["rsyncd"]


def test_a_rare_english_word_is_mentioned_by_another_form_of_itself() -> None:
    assert unmentioned_names("What happens while rebasing?", ["git rebase replays commits."]) == []
    assert unmentioned_names("When diffing two branches, what does ... mean?", ["git diff A...B"]) == []
    assert unmentioned_names("I cloned a project with submodules.", ["A submodule is a repository."]) == []
