// Peer MLLP server for `cargo bench --bench ingest`: @medplum/hl7 answering every message with an AA built
// by @medplum/core's Hl7Message.buildAck(). It journals nothing. Prints `{"port": N}` once listening.
import { Hl7Server } from '@medplum/hl7';

const server = new Hl7Server((connection) => {
  connection.addEventListener('message', ({ message }) => {
    connection.send(message.buildAck());
  });
});

await server.start(Number(process.env.PEER_PORT ?? 0));
console.log(JSON.stringify({ port: server.server.address().port }));

const stop = () => server.stop({ forceDrainTimeoutMs: 100 }).finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
