import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildModel } from '../../controlplane/model/build.js';
import { snapshotJson } from '../../controlplane/model/render.js';
import { expectedText, loadGoldenCases } from '../support/golden.js';

// Each case's README.md (or the comment at the top of input.yaml) says what it covers; the
// assertion is the whole model output, so an unintended change anywhere shows up as a diff.
for (const c of loadGoldenCases()) {
  test(`golden: ${c.name}`, () => {
    const actual = `${JSON.stringify(snapshotJson(buildModel(c.view, c.opts)), null, 2)}\n`;
    const expected = expectedText(c, actual);
    assert.ok(expected !== undefined, `${c.dir}/expected.json is missing: run AMBIT_UPDATE_GOLDEN=1 npm test -- golden and review it`);
    assert.equal(actual, expected);
  });
}
