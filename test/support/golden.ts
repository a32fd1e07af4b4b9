// Golden-file cases for the model: test/golden/<case>/input.yaml (Kubernetes objects as the API
// server returns them, status included), optional options.json (ModelOptions overrides), and
// expected.json (the snapshot as snapshotJson renders it). `AMBIT_UPDATE_GOLDEN=1 npm test --
// golden` rewrites expected.json from the current output; review the diff before committing.

import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { viewFromObjects } from '../../mesh/config/kinds.js';
import type { ClusterView } from '../../mesh/config/view.js';
import { DEFAULT_MODEL_OPTIONS, type ModelOptions } from '../../controlplane/model/types.js';

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

export const GOLDEN_DIR = join(repoRoot(), 'test', 'golden');

export interface GoldenCase {
  name: string;
  dir: string;
  view: ClusterView;
  opts: ModelOptions;
}

/** Parses YAML documents into plain objects; a syntax error names the file and document. */
export function yamlObjects(text: string, source: string): unknown[] {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) return [];
  return docs.map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${source}: document ${i + 1}: ${doc.errors[0]!.message}`);
    return doc.toJS() as unknown;
  }).filter((v) => v !== null && v !== undefined);
}

export function loadGoldenCases(): GoldenCase[] {
  return readdirSync(GOLDEN_DIR, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort()
    .map((name) => {
      const dir = join(GOLDEN_DIR, name);
      const input = join(dir, 'input.yaml');
      const { view, rejected } = viewFromObjects(yamlObjects(readFileSync(input, 'utf8'), input));
      if (rejected.length > 0) throw new Error(`${input}: ${rejected.join('; ')}`);
      const optsFile = join(dir, 'options.json');
      const overrides = existsSync(optsFile) ? (JSON.parse(readFileSync(optsFile, 'utf8')) as Partial<ModelOptions>) : {};
      return { name, dir, view, opts: { ...DEFAULT_MODEL_OPTIONS, ...overrides } };
    });
}

export const UPDATE_GOLDEN = process.env.AMBIT_UPDATE_GOLDEN === '1';

/** The expected text, or (when updating) writes `actual` and returns it. */
export function expectedText(c: GoldenCase, actual: string): string | undefined {
  const file = join(c.dir, 'expected.json');
  if (UPDATE_GOLDEN) {
    writeFileSync(file, actual);
    return actual;
  }
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
}
