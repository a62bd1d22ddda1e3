// Parse every ```mermaid block of the given markdown files with Mermaid's own
// parser (the one that decides whether GitHub shows a diagram or nothing).
// Run by scripts/check_mermaid.sh from a directory holding mermaid and jsdom.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { JSDOM } from "jsdom";

// Mermaid expects a DOM (DOMPurify) even to parse; jsdom stands in for the browser.
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });
const version = createRequire(import.meta.url)("mermaid/package.json").version;

let failed = 0;
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, "utf8");
  const blocks = [...text.matchAll(/```mermaid\n([\s\S]*?)```/g)].map((m) => m[1]);
  if (blocks.length === 0) {
    console.error(`${file}: no mermaid block found`);
    failed++;
    continue;
  }
  for (const [i, block] of blocks.entries()) {
    try {
      const res = await mermaid.parse(block);
      console.log(`${file}: block ${i + 1}: ok (${res?.diagramType ?? "parsed"}, mermaid ${version})`);
    } catch (e) {
      console.error(`${file}: block ${i + 1}: ${e.message}`);
      failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
