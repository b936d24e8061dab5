// Decodes a gzipped pprof profile with protobufjs (an independent decoder,
// reading the message definitions from the .proto text) and prints a summary
// as JSON: sample totals, and the total per leaf and per root function.
// Usage: node pprof_decode.cjs <profile.proto> <file.pb.gz>
const fs = require("fs");
const zlib = require("zlib");
const protobuf = require("protobufjs");

const [protoPath, file] = process.argv.slice(2);
const root = protobuf.loadSync(protoPath);
const Profile = root.lookupType("perftools.profiles.Profile");
const profile = Profile.toObject(Profile.decode(zlib.gunzipSync(fs.readFileSync(file))), {
  longs: Number,
  defaults: true,
});
const strings = profile.stringTable;
const functionName = new Map(profile.function.map((f) => [f.id, strings[f.name]]));
const locationName = new Map(
  profile.location.map((l) => [l.id, functionName.get(l.line[0].functionId)]),
);
const byLeaf = {};
const byRoot = {};
let total = 0;
for (const s of profile.sample) {
  const v = s.value[0];
  total += v;
  const names = s.locationId.map((id) => locationName.get(id));
  byLeaf[names[0]] = (byLeaf[names[0]] || 0) + v;
  byRoot[names[names.length - 1]] = (byRoot[names[names.length - 1]] || 0) + v;
}
console.log(
  JSON.stringify({
    sampleType: strings[profile.sampleType[0].type],
    unit: strings[profile.sampleType[0].unit],
    samples: profile.sample.length,
    total,
    byLeaf,
    byRoot,
    firstString: strings[0],
  }),
);
