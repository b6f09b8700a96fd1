// An autobahn-js client for tests/test_wamp_js.py: commands in, events out, one JSON
// object per line. Usage: node wamp_client.mjs ws://HOST:PORT/ REALM json|msgpack
// It offers the one subprotocol of its serializer (wamp.2.json or wamp.2.msgpack), as a
// browser application configured with that serializer does.
import autobahn from "autobahn";
import { createInterface } from "node:readline";

if (typeof WebSocket !== "function") {
  console.error("this Node has no WebSocket: run it with --experimental-websocket (Node 20)");
  process.exit(2);
}

const [url, realm, codec] = process.argv.slice(2);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const serializer = codec === "msgpack"
  ? new autobahn.serializer.MsgpackSerializer()
  : new autobahn.serializer.JSONSerializer();
// A binary value (msgpack) is shown to the test as {"bytes": [...]}, everything else as it is.
const plain = (value) => JSON.parse(JSON.stringify(value ?? null, (key, v) =>
  v instanceof Uint8Array ? { bytes: Array.from(v) } : v));
const invocations = new Map(); // invocation id -> resolve, until the test yields a result
const ids = { next: 1 };
let session = null;

const connection = new autobahn.Connection({
  url, realm, protocols: [`wamp.2.${codec}`], serializers: [serializer], max_retries: 0,
});
connection.onopen = (opened, details) => {
  session = opened;
  emit({ event: "joined", session: opened.id, protocol: connection.transport.info.protocol,
         roles: details.roles });
};
connection.onclose = (reason, details) => {
  emit({ event: "closed", reason, detail: details.reason ?? null, message: details.message ?? null });
  process.exit(0);
  return true; // no reconnecting
};

const failed = (op, id) => (error) => emit({ event: "error", op, id, error: error.error ?? String(error),
                                            args: plain(error.args) });

const commands = {
  subscribe({ id, topic, options = {} }) {
    session.subscribe(topic, (args, kwargs, details) => emit({
      event: "event", id, args: plain(args), kwargs: plain(kwargs),
      publisher_authid: details.publisher_authid ?? null, topic: details.topic ?? null,
    }), options).then(() => emit({ event: "subscribed", id }), failed("subscribe", id));
  },
  publish({ id, topic, args = [], kwargs = {}, options = {} }) {
    session.publish(topic, args, kwargs, { ...options, acknowledge: true })
      .then((publication) => emit({ event: "published", id, publication: publication.id }),
            failed("publish", id));
  },
  register({ id, procedure, options = {} }) {
    session.register(procedure, (args, kwargs, details) => {
      const invocation = ids.next++;
      emit({ event: "invocation", id, invocation, args: plain(args), kwargs: plain(kwargs),
             procedure: details.procedure ?? null, caller_authid: details.caller_authid ?? null });
      return new Promise((resolve) => invocations.set(invocation, resolve));
    }, options).then(() => emit({ event: "registered", id }), failed("register", id));
  },
  yield({ invocation, args = [], kwargs = {} }) {
    invocations.get(invocation)(new autobahn.Result(args, kwargs));
    invocations.delete(invocation);
  },
  call({ id, procedure, args = [], kwargs = {}, options = {} }) {
    session.call(procedure, args, kwargs, options).then((result) => {
      const answer = result instanceof autobahn.Result
        ? { args: plain(result.args), kwargs: plain(result.kwargs) }
        : { args: plain([result]), kwargs: {} };
      emit({ event: "result", id, ...answer });
    }, failed("call", id));
  },
  leave() {
    connection.close("wamp.close.normal", "done");
  },
};

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.op](command);
});
connection.open();
