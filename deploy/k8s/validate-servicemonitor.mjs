// Validates ServiceMonitor documents against the prometheus-operator CRD schema shipped in
// the npm package @kubernetes-models/prometheus-operator (ajv). Used by deploy/check.sh.
// Usage: node validate-servicemonitor.mjs FILE... (placed beside node_modules: ES modules
// resolve packages relative to the script, not NODE_PATH)
import fs from 'node:fs';
import yaml from 'js-yaml';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
let bad = 0;
for (const f of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(f, 'utf8'))) {
    try { new ServiceMonitor(doc).validate(); console.log(`ok ${f} ServiceMonitor/${doc.metadata.name}`); }
    catch (e) { bad++; console.log(`FAIL ${f}: ${e.message}`); }
  }
}
process.exit(bad ? 1 : 0);
