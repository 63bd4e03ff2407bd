// One peer framework running N agent runs (model -> tool -> model) at
// concurrency C against the fake server; prints "cpu_us_per_run peak_rss_kib".
// Usage: node peer.mjs ai|agents BASE_URL N C
const [which, baseURL, nArg, cArg] = process.argv.slice(2);
const N = Number(nArg), C = Number(cArg);
const { z } = await import("zod");

let runOne;
if (which === "ai") {
  const { generateText, tool, stepCountIs } = await import("ai");
  const { createOpenAI } = await import("@ai-sdk/openai");
  const model = createOpenAI({ baseURL, apiKey: "k" }).chat("bench");
  const lookup = tool({
    description: "Look a key up.",
    inputSchema: z.object({ key: z.string() }),
    execute: async ({ key }) => "value of " + key,
  });
  runOne = async (i) => {
    const r = await generateText({ model, system: "Answer.", prompt: "run " + i,
      tools: { lookup }, stopWhen: stepCountIs(4), maxRetries: 0 });
    if (!r.text) throw new Error("no text");
  };
} else {
  const agents = await import("@openai/agents");
  const { OpenAI } = await import("openai");
  const client = new OpenAI({ baseURL, apiKey: "k" });
  agents.setDefaultOpenAIClient(client);
  agents.setOpenAIAPI("chat_completions");
  agents.setTracingDisabled(true);
  const lookup = agents.tool({ name: "lookup", description: "Look a key up.",
    parameters: z.object({ key: z.string() }), execute: async ({ key }) => "value of " + key });
  const agent = new agents.Agent({ name: "a", instructions: "Answer.", model: "bench", tools: [lookup] });
  runOne = async (i) => {
    const r = await agents.run(agent, "run " + i);
    if (!r.finalOutput) throw new Error("no output");
  };
}

async function batch(count) {
  let next = 0;
  const lanes = [];
  for (let l = 0; l < C; l++) lanes.push((async () => { while (next < count) await runOne(next++); })());
  await Promise.all(lanes);
}
await batch(2 * C); // warm: start-up is not counted
const c0 = process.cpuUsage();
await batch(N);
const c = process.cpuUsage(c0);
console.log(((c.user + c.system) / N).toFixed(1), Math.round(process.resourceUsage().maxRSS));
