// node validate.mjs FILE...: every document of kind ServiceMonitor or PrometheusRule is checked
// against the Prometheus Operator's CRD schema; anything else is an error (it would not be
// checked). Prints one line per resource; exit 1 on any failure.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { ServiceMonitor, PrometheusRule };
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    const Kind = kinds[obj?.kind];
    if (!Kind || obj.apiVersion !== "monitoring.coreos.com/v1") {
      console.log(`FAIL ${file}: ${obj?.apiVersion} ${obj?.kind} is not a resource this script validates`);
      failed++;
      continue;
    }
    try {
      new Kind(obj).validate();
      console.log(`PASS ${file}: ${obj.kind}/${obj.metadata.name}`);
    } catch (e) {
      console.log(`FAIL ${file}: ${obj.kind}/${obj.metadata?.name}: ${e.message}`);
      failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
