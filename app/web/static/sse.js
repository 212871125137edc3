/*
 * Server-Sent Events read from a fetch() response body.
 *
 * Hand-written because the browser's EventSource can only send a GET without a body, while /v1/ask takes
 * the question as a JSON POST. It follows the HTML standard's event-stream rules: lines end with CRLF, LF
 * or CR (a CRLF may be split between two network chunks); a line starting with ":" is a comment (the
 * server's keep-alive pings); "data" lines are joined with newlines; a blank line dispatches the event;
 * an event the stream ends in the middle of is dropped.
 */

const LINE_END = /\r\n|\r|\n/;

export async function* readServerSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "";
  let data = [];

  // Returns the event a line completes, or null.
  function takeLine(line) {
    if (line === "") {
      const event = data.length ? { event: name || "message", data: data.join("\n") } : null;
      name = "";
      data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    return null;
  }

  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (;;) {
        const match = LINE_END.exec(buffer);
        if (match === null) break;
        // A CR at the very end may be the first half of a CRLF still on its way.
        if (match[0] === "\r" && match.index === buffer.length - 1) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const event = takeLine(line);
        if (event) yield event;
      }
    }
    if (buffer.endsWith("\r")) {
      const event = takeLine(buffer.slice(0, -1));
      if (event) yield event;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
