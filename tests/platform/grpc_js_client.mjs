// A second, independent gRPC implementation (Node's @grpc/grpc-js) calling the Python services.
// Usage: node grpc_js_client.mjs <ingest addr> <aggregator addr> <api key> <symbol>
// Prints one JSON object with what each call returned. The contract comes from the descriptor set that
// `marketdata codegen` writes (it holds every import, buf/validate/validate.proto included).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../tools/package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [ingestAddr, aggregatorAddr, apiKey, symbol] = process.argv.slice(2);
const descriptorSet = fs.readFileSync(path.join(here, "../../proto/marketdata.binpb"));
const definition = protoLoader.loadFileDescriptorSetFromBuffer(descriptorSet, {
  // Loaded from descriptors, fields keep their proto names (event_time), whatever keepCase says.
  longs: String,
  enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).marketdata.v1;
const credentials = grpc.credentials.createInsecure();
const ingest = new v1.IngestService(ingestAddr, credentials);
const aggregator = new v1.AggregatorService(aggregatorAddr, credentials);

function call(client, method, request, key) {
  const metadata = new grpc.Metadata();
  if (key) metadata.set("x-api-key", key);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, response) => {
      if (error) {
        resolve({ code: grpc.status[error.code], details: error.details,
                  hasStatusDetails: error.metadata.get("grpc-status-details-bin").length > 0 });
      } else {
        resolve({ code: "OK", response });
      }
    });
  });
}

const now = Date.now();
const tick = (n, price) => ({
  symbol, price, size: 0.5, trade_id: `js-${now}-${n}`,
  event_time: { seconds: String(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
});
const result = {
  upsert: await call(ingest, "upsertSymbols", { items: [{ symbol, base: "JS", quote: "USDT", active: true }] }, apiKey),
  publish: await call(ingest, "publishTicks", { items: [tick(1, 100.5), tick(2, 101.25), tick(3, 99.75)] }, apiKey),
  noKey: await call(ingest, "publishTicks", { items: [tick(4, 100)] }, null),
  invalid: await call(ingest, "publishTicks", { items: [tick(5, -1)] }, apiKey),
  status: await call(aggregator, "getStatus", {}, null),
};
console.log(JSON.stringify(result));
ingest.close();
aggregator.close();
