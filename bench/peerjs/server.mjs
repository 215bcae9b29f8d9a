// Launches the PeerJS server for cmd/signalbench: node server.mjs PORT CONCURRENT_LIMIT.
// The same PeerServer the `peerjs` command starts, minus its console.log for
// every connect and disconnect (10,000 log lines would be measured as the
// server's cost). It prints one "listening PORT" line when ready.
import { PeerServer } from "peer";

const port = Number(process.argv[2]);
const limit = Number(process.argv[3] ?? 5000);
if (!Number.isInteger(port) || !Number.isInteger(limit)) {
  console.error("usage: node server.mjs PORT CONCURRENT_LIMIT");
  process.exit(2);
}

const server = PeerServer(
  {
    host: "127.0.0.1",
    port,
    path: "/",
    key: "peerjs",
    concurrent_limit: limit,
    alive_timeout: 60000, // the peerjs command's default
  },
  (srv) => {
    console.log(`listening ${srv.address().port}`);
    const stop = () => srv.close(() => process.exit(0));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  },
);
server.on("error", (err) => console.error(`peerjs: ${err}`));
