// ProtoMsg frames of the deviceconnect websocket (docs/protocol.md §2.1, §2.4):
// a msgpack map {hdr: {proto, typ, sid, props}, body}, keys omitted when
// empty, body as bin.
import { decode, encode } from "@msgpack/msgpack";

export const PROTO_SHELL = 1;

export const STATUS_NORMAL = 1;
export const STATUS_ERROR = 2;

const utf8 = new TextEncoder();

// shellFrame encodes one shell message; body is a string or bytes.
export function shellFrame(typ, sid, props, body) {
  const hdr = { proto: PROTO_SHELL, typ };
  if (sid) hdr.sid = sid;
  if (props && Object.keys(props).length > 0) hdr.props = props;
  const msg = { hdr };
  if (typeof body === "string") body = utf8.encode(body);
  if (body && body.length > 0) msg.body = body;
  return encode(msg);
}

// decodeFrame turns a websocket message into {proto, typ, sid, props, body};
// body is always bytes (a device or server may send it as str or bin).
export function decodeFrame(data) {
  const m = decode(new Uint8Array(data));
  if (m === null || typeof m !== "object" || m.hdr === null || typeof m.hdr !== "object") {
    throw new Error("not a ProtoMsg");
  }
  let body = m.body;
  if (body === undefined || body === null) body = new Uint8Array(0);
  else if (typeof body === "string") body = utf8.encode(body);
  else if (!(body instanceof Uint8Array)) throw new Error("body is neither bin nor str");
  return {
    proto: m.hdr.proto,
    typ: m.hdr.typ || "",
    sid: m.hdr.sid || "",
    props: m.hdr.props || {},
    body,
  };
}

export function bodyText(body) {
  return new TextDecoder().decode(body);
}
