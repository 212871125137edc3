#!/bin/sh
# The image's entrypoint: chooses the chat model backend, then runs the command (`wenda serve` by default).
#
# docker-compose.yml's `gpu` profile adds a vLLM server named `vllm`, and a profile cannot change another
# service's environment. So, unless WENDA_LLM__BACKEND is set, a vLLM server whose host name resolves is used:
# with the profile the name exists on the compose network, without it it does not and wenda answers with the
# bundled local model. Settings given explicitly always win.
set -eu

vllm_url="${WENDA_VLLM_URL:-http://vllm:8000/v1}"

if [ -z "${WENDA_LLM__BACKEND:-}" ]; then
    host="${vllm_url#*://}"
    host="${host%%/*}"
    host="${host%:*}"
    if [ -n "$host" ] && getent hosts "$host" >/dev/null 2>&1; then
        export WENDA_LLM__BACKEND=openai
        export WENDA_LLM__BASE_URL="${WENDA_LLM__BASE_URL:-$vllm_url}"
        export WENDA_LLM__MODEL="${WENDA_LLM__MODEL:-${WENDA_VLLM_SERVED_MODEL_NAME:-qwen2.5-coder-0.5b-instruct}}"
        echo "docker-entrypoint: $host resolves: answering through vLLM at $WENDA_LLM__BASE_URL" \
            "($WENDA_LLM__MODEL)" >&2
    fi
fi

exec "$@"
