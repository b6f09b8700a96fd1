// An mqtt.js client for tests/test_mqtt_js.py: commands in, events out, one JSON object per
// line. Usage: node mqtt_client.mjs ws://HOST:PORT/mqtt CLIENT_ID PROTOCOL_VERSION
// It connects over WebSocket with the library's defaults otherwise, as a browser dashboard would.
import mqtt from "mqtt";
import { createInterface } from "node:readline";

const [url, clientId, version] = process.argv.slice(2);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const client = mqtt.connect(url, { clientId, protocolVersion: Number(version), reconnectPeriod: 0 });
client.on("connect", (connack) => emit({ event: "connected", returnCode: connack.returnCode ?? connack.reasonCode ?? 0 }));
client.on("message", (topic, payload, packet) => emit({
  event: "message", topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain,
  user: packet.properties?.userProperties ?? {},
}));
client.on("error", (error) => emit({ event: "error", message: String(error) }));
client.on("close", () => {
  emit({ event: "closed" });
  process.exit(0);
});

const commands = {
  subscribe({ topic, qos = 0 }) {
    client.subscribe(topic, { qos }, (error, granted) => emit({ event: "subscribed", error: error && String(error), granted }));
  },
  publish({ topic, payload, qos = 0, retain = false }) {
    client.publish(topic, payload, { qos, retain }, (error) => emit({ event: "published", error: error && String(error) }));
  },
  end() {
    client.end();
  },
};

createInterface({ input: process.stdin }).on("line", (line) => {
  const { op, ...args } = JSON.parse(line);
  commands[op](args);
});
