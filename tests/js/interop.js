// A Node ad server on kafkajs (npm), as a user would write one, against a running lola worker.
// Run by tests/stream/test_kafkajs.py; prints one JSON line with what it saw.
//
// Env: BOOTSTRAP, EVENTS_TOPIC, DECISIONS_TOPIC, SNAPSHOTS_TOPIC, EXPERIMENTS, TIMEOUT_MS.
// Keying rule: the Kafka key is the experiment_id, and the partitioner is murmur2 (kafkajs'
// DefaultPartitioner is the Java client's murmur2), so every event of an experiment reaches
// the worker that owns it.
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing env ${name}`);
  return v;
};
const kafka = new Kafka({ clientId: 'lola-js-interop', brokers: [env('BOOTSTRAP')], logLevel: logLevel.ERROR });
const experiments = Number(env('EXPERIMENTS'));
const timeoutMs = Number(process.env.TIMEOUT_MS || 60000);

async function readUntil(topic, groupId, done) {
  // Reads `topic` from its start until done(messages) is true or the timeout passes.
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(() => finish(false), timeoutMs);
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      seen.push({ partition, key: message.key && message.key.toString(), value: JSON.parse(message.value.toString()) });
      if (done(seen)) finish(true);
    },
  });
  const ok = await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  return { ok, seen };
}

async function main() {
  const producer = kafka.producer();
  await producer.connect();
  const now = Date.now() / 1000;
  const events = [];
  const requestIds = [];
  for (let e = 0; e < experiments; e++) {
    const exp = `js-exp-${e}`;
    for (const v of ['a', 'b']) {
      events.push({ type: 'variant', experiment_id: exp, variant_id: v, text: `headline ${v} of ${exp}` });
    }
    for (let r = 0; r < 3; r++) {
      const rid = `${exp}-req-${r}`;
      requestIds.push(rid);
      events.push({ type: 'decision_request', request_id: rid, experiment_id: exp, ts: now });
    }
    events.push({ type: 'impression', event_id: `${exp}-imp-0`, experiment_id: exp, variant_id: 'a', ts: now });
    events.push({ type: 'click', event_id: `${exp}-clk-0`, experiment_id: exp, variant_id: 'a', ts: now });
  }
  const partitions = {};
  // One send per event keeps the order of an experiment's events (one key -> one partition).
  for (const ev of events) {
    const [meta] = await producer.send({
      topic: env('EVENTS_TOPIC'),
      messages: [{ key: ev.experiment_id, value: JSON.stringify(ev) }],
    });
    partitions[ev.experiment_id] = meta.partition;
  }
  await producer.disconnect();

  const wanted = new Set(requestIds);
  const decisions = await readUntil(env('DECISIONS_TOPIC'), 'js-decisions-reader',
    (seen) => requestIds.every((rid) => seen.some((m) => m.value.request_id === rid)));
  const snapshots = await readUntil(env('SNAPSHOTS_TOPIC'), 'js-snapshots-reader', (seen) => {
    const latest = {};
    for (const m of seen) latest[m.key] = m.value;
    return Object.keys(partitions).every((exp) => latest[exp] && latest[exp].arms && latest[exp].arms.a
      && latest[exp].arms.a.clicks >= 1);
  });
  const latest = {};
  for (const m of snapshots.seen) latest[m.key] = m.value;
  console.log(JSON.stringify({
    produced: events.length,
    partitions,
    decisions_ok: decisions.ok,
    decisions: decisions.seen.filter((m) => wanted.has(m.value.request_id)).map((m) => m.value),
    snapshots_ok: snapshots.ok,
    snapshots: latest,
  }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
