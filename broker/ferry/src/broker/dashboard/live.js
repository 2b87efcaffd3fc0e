// The broker's API for the dashboard: requests with the bearer token, the event stream
// read with fetch() (EventSource sends no Authorization header), and the token's claims,
// read only to decide what to offer (the broker decides what is allowed).

/** The broker answered with an error (`{"error": {"code", "message"}}`). */
export class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The broker could not be reached (or its proxy says so). */
export class Unreachable extends Error {}

const REQUEST_TIMEOUT_MS = 15_000;
/** The broker sends a keep-alive every 15 s: a stream quiet for longer is dead. */
const STREAM_QUIET_MS = 45_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

async function errorOf(response) {
  let body = null;
  try {
    body = JSON.parse(await response.text());
  } catch {
    // Not our JSON: a proxy's page, or nothing.
  }
  if ([502, 503, 504].includes(response.status)) {
    return new Unreachable(`the broker's proxy answered ${response.status}`);
  }
  return new HttpError(
    response.status,
    body?.error?.code ?? `http_${response.status}`,
    body?.error?.message ?? `${response.status} ${response.statusText}`,
  );
}

/** One API call; resolves with the JSON body, rejects with HttpError or Unreachable. */
export async function api(token, method, path, body, signal) {
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    if (!response.ok) throw await errorOf(response);
    return await response.json();
  } catch (error) {
    if (error instanceof HttpError || error instanceof Unreachable) throw error;
    if (signal?.aborted) throw error;
    throw new Unreachable(error.message);
  }
}

/** The token's claims (the JWT's middle part), or null if it is not a JWT. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Whether the claims carry a role that may start and cancel migrations. */
export function mayOperate(claims) {
  const roles = Array.isArray(claims?.roles) ? claims.roles : [];
  return roles.includes("operator") || roles.includes("admin");
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** A read that gives up when nothing arrives in time. */
function readWithin(reader, ms) {
  let timer;
  const quiet = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the event stream went quiet")), ms);
  });
  return Promise.race([reader.read(), quiet]).finally(() => clearTimeout(timer));
}

/** The frames of a text/event-stream body: {event, id, data}. */
async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let id = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await readWithin(reader, STREAM_QUIET_MS);
      if (done) return;
      buffer += value;
      // A "\r" at the end may be the first half of "\r\n": keep it for the next chunk.
      const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(cut);
      for (const line of lines) {
        if (line === "") {
          if (data.length > 0) yield { event: event || "message", id, data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follows `GET /api/v1/events` until `signal` aborts, reconnecting with backoff. Calls
 * onStatus("connecting" | "live" | "offline", retryMs), onOpen() on each (re)connection
 * (re-read what may have been missed), onEvent({kind, data}), and onRejected(HttpError)
 * on a 401 or 403, which ends it.
 */
export async function follow(token, { signal, onStatus, onOpen, onEvent, onRejected }) {
  let delay = BACKOFF_FIRST_MS;
  while (!signal.aborted) {
    onStatus("connecting");
    try {
      const response = await fetch("/api/v1/events", {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal,
      });
      if (response.status === 401 || response.status === 403) {
        onRejected(await errorOf(response));
        return;
      }
      if (!response.ok || !response.body) throw await errorOf(response);
      for await (const frame of frames(response.body)) {
        if (frame.event === "hello") {
          delay = BACKOFF_FIRST_MS;
          onStatus("live");
          onOpen();
          continue;
        }
        let data = null;
        try {
          data = JSON.parse(frame.data);
        } catch {
          continue;
        }
        onEvent({ kind: frame.event, data: data?.data ?? data });
      }
    } catch {
      // Dropped, refused or quiet: retried below, unless we were asked to stop.
    }
    if (signal.aborted) return;
    // Jitter, so that many screens do not come back at the same instant.
    const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
    onStatus("offline", wait);
    await sleep(wait, signal);
    delay = Math.min(delay * 2, BACKOFF_MAX_MS);
  }
}
