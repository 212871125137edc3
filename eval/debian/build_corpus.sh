#!/usr/bin/env bash
# Build the corpus of the Debian dev evaluation set (eval/debian/questions.jsonl).
#
#   bash eval/debian/build_corpus.sh OUT
#
# Downloads two Debian documentation packages with `apt-get download` (no root needed, but the apt
# package lists must be current: `apt-get update` as root), unpacks them with `dpkg -x` in a temporary
# folder and copies the chosen HTML files, unchanged, into OUT/zh/ and OUT/en/.
#
# Written against Debian 12 (bookworm); `apt-cache policy` when the set was built:
#
#   debian-reference-zh-cn:
#     Candidate: 2.100
#     Version table:
#        2.100 500
#           500 http://deb.debian.org/debian bookworm/main amd64 Packages
#   debian-handbook:
#     Candidate: 11.20220922
#     Version table:
#        11.20220922 500
#           500 http://deb.debian.org/debian bookworm/main amd64 Packages
#
#   debian-reference-zh-cn_2.100_all.deb      SHA256 6d2d8d9a646397e28b04cdff23d2e4374101ebf9be348e35961af62c8a2d0977
#   debian-handbook_11.20220922_all.deb       SHA256 3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa
#
# Those exact versions are requested. If the archive no longer has them, the script stops; set
# ALLOW_OTHER_VERSIONS=1 to take the current candidate instead (the copied files are then checked against the
# recorded SHA-256 sums only as a warning; run eval/debian/check_questions.py to see whether the gold passages
# still match).

set -euo pipefail

REF_PKG=debian-reference-zh-cn
REF_VERSION=2.100
HB_PKG=debian-handbook
HB_VERSION=11.20220922

# Debian Reference (zh_CN), chapters not used by shared/eval/dev/answers-zh:
# 6 network applications, 9 system tips, 11 data conversion, 12 programming.
REF_DIR=usr/share/debian-reference
ZH_FILES=(
    "ch06.zh-cn.html acdb0885f276bda6e06e9412b48dca81f147488a1d5c8bd63cefcfe403ed598a"
    "ch09.zh-cn.html f498518d4c7e19533147fbbb68921e790f105946434c9cfff233a6f48d1d4317"
    "ch11.zh-cn.html cf10a6e6abd8a67f69b02954ebef80857cd8e5d292f58a49ec17d84787dfcb1b"
    "ch12.zh-cn.html 6fba5c5790a1971bdedf470286afb87ada3975977da2ab8783ef2b196f2f8c74"
)

# The Debian Administrator's Handbook (en-US): 9.2 remote login, 8.9 other configurations,
# 11.2 web server, 5.4 dpkg, 14.2 firewall.
HB_DIR=usr/share/doc/debian-handbook/html/en-US
EN_FILES=(
    "sect.remote-login.html 1a9ff3f19ce35f83d6df0a310af694fe8da1d0463580f3a235965c867e42644d"
    "sect.config-misc.html 0bb2bf563826438db37d97d918ed2237de3a9c13562fc22abee1faf81c1d48dd"
    "sect.http-web-server.html 3cce01aea8e9c10733998f2f40e393a3d2d10df3e4448390da7b78c9bca2d0c1"
    "sect.manipulating-packages-with-dpkg.html de24e111d8ba0f6ac551d93fe04ccb0d4e077663aaba37e34fabe76a10f358c3"
    "sect.firewall-packet-filtering.html c7a65901402d0df13729605d4f58c9380637abf21e9b305645de56fafd972f15"
)

die() {
    echo "build_corpus.sh: error: $*" >&2
    exit 1
}

[[ $# -eq 1 && -n "$1" ]] || die "usage: bash eval/debian/build_corpus.sh OUT_DIR"
OUT=$1
for tool in apt-get apt-cache dpkg dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian-based system"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/debian-corpus.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

download() {  # package version
    local pkg=$1 version=$2 candidate
    if (cd "$WORK" && apt-get download -q "$pkg=$version" >/dev/null 2>"$WORK/apt.err"); then
        return
    fi
    if [[ "${ALLOW_OTHER_VERSIONS:-0}" == 1 ]]; then
        candidate=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
        [[ -n "$candidate" && "$candidate" != "(none)" ]] \
            || die "package $pkg is not known to apt (run 'apt-get update' as root?)"
        echo "build_corpus.sh: warning: $pkg $version unavailable, using $candidate" >&2
        (cd "$WORK" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
        return
    fi
    cat "$WORK/apt.err" >&2
    die "cannot download $pkg=$version (run 'apt-get update' as root, or set ALLOW_OTHER_VERSIONS=1)"
}

download "$REF_PKG" "$REF_VERSION"
download "$HB_PKG" "$HB_VERSION"

shopt -s nullglob
debs=("$WORK"/*.deb)
[[ ${#debs[@]} -eq 2 ]] || die "expected 2 downloaded .deb files in $WORK, found ${#debs[@]}"
for deb in "${debs[@]}"; do
    echo "unpacking $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
    dpkg -x "$deb" "$WORK/root"
done

check_files() {  # source-dir "name sha256"...: fail before anything is copied
    local src=$1 entry name sum actual
    shift
    for entry in "$@"; do
        name=${entry%% *}
        sum=${entry##* }
        [[ -f "$src/$name" ]] || die "missing file in package: ${src#"$WORK/root"}/$name"
        actual=$(sha256sum "$src/$name" | cut -d' ' -f1)
        if [[ "$actual" != "$sum" ]]; then
            [[ "${ALLOW_OTHER_VERSIONS:-0}" == 1 ]] \
                || die "$name differs from the recorded version (sha256 $actual, expected $sum)"
            echo "build_corpus.sh: warning: $name differs from the recorded version" >&2
        fi
    done
}

copy_files() {  # source-dir dest-dir "name sha256"...
    local src=$1 dest=$2 entry
    shift 2
    mkdir -p "$dest"
    for entry in "$@"; do
        cp "$src/${entry%% *}" "$dest/"
    done
}

check_files "$WORK/root/$REF_DIR" "${ZH_FILES[@]}"
check_files "$WORK/root/$HB_DIR" "${EN_FILES[@]}"
copy_files "$WORK/root/$REF_DIR" "$OUT/zh" "${ZH_FILES[@]}"
copy_files "$WORK/root/$HB_DIR" "$OUT/en" "${EN_FILES[@]}"

echo "corpus written to $OUT: ${#ZH_FILES[@]} files in $OUT/zh, ${#EN_FILES[@]} files in $OUT/en"
