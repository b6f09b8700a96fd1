// A @stomp/stompjs client for tests/test_stomp_js.py: commands in, events out, one JSON
// object per line. Usage: node stomp_client.mjs ws://HOST:PORT/
// It connects with the library's defaults (it offers v10.stomp, v11.stomp and v12.stomp,
// accept-version 1.2,1.1,1.0), like a browser application would.
import { Client } from "@stomp/stompjs";
import { createInterface } from "node:readline";

if (typeof WebSocket !== "function") {
  console.error("this Node has no WebSocket: run it with --experimental-websocket (Node 20)");
  process.exit(2);
}

const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const pending = new Map(); // message-id -> IMessage, until the test acks or nacks it

const client = new Client({
  brokerURL: process.argv[2],
  reconnectDelay: 0,
  heartbeatIncoming: 0,
  heartbeatOutgoing: 0,
  onConnect: (frame) => emit({ event: "connected", headers: frame.headers }),
  onStompError: (frame) => emit({ event: "error", headers: frame.headers, body: frame.body }),
  onWebSocketClose: (close) => {
    emit({ event: "closed", code: close.code });
    process.exit(0);
  },
});

const commands = {
  subscribe({ destination, id, ack = "auto", receipt }) {
    client.watchForReceipt(receipt, () => emit({ event: "receipt", id: receipt }));
    client.subscribe(destination, (message) => {
      pending.set(message.headers["message-id"], message);
      emit({ event: "message", headers: message.headers, body: message.body });
    }, { id, ack, receipt });
  },
  send({ destination, body, headers = {}, receipt }) {
    client.watchForReceipt(receipt, () => emit({ event: "receipt", id: receipt }));
    client.publish({ destination, body, headers: { ...headers, receipt } });
  },
  ack({ messageId }) {
    pending.get(messageId).ack();
    pending.delete(messageId);
  },
  nack({ messageId }) {
    pending.get(messageId).nack();
    pending.delete(messageId);
  },
  disconnect() {
    client.deactivate();
  },
};

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  commands[command.op](command);
});
client.activate();
