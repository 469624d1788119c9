// berth's web console in a real browser: Debian's headless Chromium
// (/usr/bin/chromium, no downloaded browser build) driven by playwright-core.
// Run by tests/e2e_console.rs against a real `berth serve`, which has set up
// the registry first (an admin, a project with a pushed image and a
// multi-arch index); the Rust side then checks with skopeo what this script
// did through the pages (the robot's secret pulls, the quota refuses a push).
//
// Environment (all set by the Rust test):
//   BERTH_URL              http://127.0.0.1:PORT
//   BERTH_ADMIN_USER, BERTH_ADMIN_PASSWORD
//   BERTH_PROJECT          the project holding the pushed images
//   BERTH_REPO             its image repository (project/name), tags in
//   BERTH_TAGS             comma-separated; the last one is deleted here
//   BERTH_INDEX_REPO       a repository whose artifact is a multi-arch index
//   BERTH_NEW_PROJECT      the project to create through "New project"
//   BERTH_ROBOT            the robot account's name to create
//   BERTH_RESULT           a file to write {robot_name, robot_secret, ...} to
//   BERTH_SCREENSHOTS      a directory for screenshots of the main pages
//   BERTH_CONSOLE_SCREENSHOT_DOCS=1, BERTH_DOCS_SCREENSHOT
//                          also save the repository page there
//   BERTH_CHROMIUM         the browser (default /usr/bin/chromium)
//
// Every step waits for what the page should show (playwright's auto-waiting
// locators and expect-like polls), never for a fixed time. Any failure
// exits non-zero with the step's name; a page error or a console error
// (a Content-Security-Policy violation shows as one) fails the run too.

import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`browser.mjs: ${name} is not set`);
  return v;
};

const base = env("BERTH_URL");
const adminUser = env("BERTH_ADMIN_USER");
const adminPassword = env("BERTH_ADMIN_PASSWORD");
const project = env("BERTH_PROJECT");
const repo = env("BERTH_REPO");
const tags = env("BERTH_TAGS").split(",");
const indexRepo = env("BERTH_INDEX_REPO");
const newProject = env("BERTH_NEW_PROJECT");
const robot = env("BERTH_ROBOT");
const resultFile = env("BERTH_RESULT");
const shots = env("BERTH_SCREENSHOTS");
const executablePath = process.env.BERTH_CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 20_000;

mkdirSync(shots, { recursive: true });

let step = "start";
function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

const problems = [];
const failures = [];
const result = {};

let page = null;
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    permissions: ["clipboard-read", "clipboard-write"],
  });
  context.setDefaultTimeout(TIMEOUT);
  page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on("console", (m) => {
    // Failed loads are judged by the response listener below (a page
    // answered 401 or 404 on purpose is no problem).
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console error on ${page.url()}: ${m.text()}`);
    }
  });
  page.on("response", (r) => {
    const url = new URL(r.url());
    // The browser's own favicon request is not the page's: berth has none.
    if (r.status() >= 400 && r.request().resourceType() !== "document" && url.pathname !== "/favicon.ico") {
      problems.push(`${r.request().method()} ${url.pathname}${url.search} answered ${r.status()} (on ${page.url()})`);
    }
  });
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  // Waits until the page has loaded (after a reload the script triggered).
  const settled = () => page.waitForLoadState("load");
  // Runs one step; a failed step is recorded (with a screenshot) and the
  // next one still runs, so one run shows every failure. Signing in is
  // fatal: nothing else can work without it.
  async function run(name, fn, { fatal = false } = {}) {
    step = name;
    try {
      await fn();
      console.log(`browser.mjs: ok: ${name}`);
    } catch (e) {
      const png = join(shots, `failed-${name.replace(/\W+/g, "-")}.png`);
      await page.screenshot({ path: png, fullPage: true }).catch(() => {});
      failures.push(`${name}: ${e.message.split("\n").slice(0, 4).join(" | ")} (on ${page.url()}; ${png})`);
      if (fatal) throw e;
    }
  }

  // ---- sign in --------------------------------------------------------------
  await run("sign in", async () => {
    await page.goto(`${base}/console/projects`);
    await page.waitForURL(/\/console\/login\?next=/);
    check(await page.locator('input[name="next"]').inputValue() === "/console/projects",
      "the login form does not carry next=/console/projects");
    await page.fill('input[name="principal"]', adminUser);
    await page.fill('input[name="password"]', "not-the-password");
    await page.click('button[type="submit"]');
    await page.getByRole("alert").filter({ hasText: "Wrong user name or password" }).waitFor();
    await page.fill('input[name="principal"]', adminUser);
    await page.fill('input[name="password"]', adminPassword);
    await page.click('button[type="submit"]');
    await page.waitForURL(`${base}/console/projects`);
    await page.locator("header .who", { hasText: adminUser }).waitFor();
    check(await page.locator(`table.list a:text-is("${project}")`).count() === 1,
      `project ${project} is not listed`);
    await shot("projects");
  }, { fatal: true });

  // ---- a new project through the "New project" form ------------------------
  await run("new project", async () => {
    await page.click("details.create summary");
    const create = page.locator("details.create form");
    await create.locator('input[name="project_name"]').fill(newProject);
    await create.locator('button[type="submit"]').click();
    // The script reloads on success: the new project's row appears.
    await page.locator(`table.list a:text-is("${newProject}")`).waitFor();
    check(await create.locator(".result.error").count() === 0, "the form reported an error");
  });

  // ---- the project's repositories ------------------------------------------
  await run("project page", async () => {
    await page.goto(`${base}/console/project?name=${encodeURIComponent(project)}`);
    await page.locator(`table.list a:text-is("${repo}")`).waitFor();
    await page.locator(`table.list a:text-is("${indexRepo}")`).waitFor();
    for (const tab of ["Repositories", "Charts", "Members", "Robot accounts", "Logs"]) {
      check(await page.locator("nav.tabs a", { hasText: tab }).count() === 1, `no ${tab} tab`);
    }
    await shot("project");
  });

  // ---- the repository: its artifact, tags and pull command ----------------
  await run("repository page", async () => {
    await page.click(`table.list a:text-is("${repo}")`);
    await page.waitForURL(/\/console\/repository\?/);
    for (const t of tags) {
      await page.locator("td.tags .tag", { hasText: t }).first().waitFor();
    }
    await shot("repository");
    if (process.env.BERTH_CONSOLE_SCREENSHOT_DOCS === "1") {
      await page.screenshot({ path: env("BERTH_DOCS_SCREENSHOT") });
    }
  });
  await run("copy the pull command", async () => {
    const copy = page.locator('table.artifacts button[aria-label="Copy the pull command"]').first();
    const command = await copy.getAttribute("data-copy");
    check(command && command.startsWith("docker pull ") && command.includes(`/${repo}:`),
      `unexpected pull command ${command}`);
    await copy.click();
    await page.locator('table.artifacts button[data-copied="1"]', { hasText: "Copied" }).waitFor();
    // The clipboard itself: http://127.0.0.1 is a secure context and the
    // context was granted clipboard-read, so what was copied can be read.
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    check(clip === command, `the clipboard holds ${JSON.stringify(clip)}, not ${JSON.stringify(command)}`);
    result.clipboard = clip;
  });

  // ---- the artifact page ------------------------------------------------------
  await run("artifact page", async () => {
    await page.locator("table.artifacts td.mono a").first().click();
    await page.waitForURL(/\/console\/artifact\?/);
    const shown = await page.locator("dl.facts").innerText();
    for (const t of tags) check(shown.includes(t), `tag ${t} is not among the artifact's facts`);
    check(/sha256:[0-9a-f]{64}/.test(shown), "no digest shown");
    await page.locator("h2", { hasText: "Layers" }).waitFor();
    await shot("artifact");
  });
  await run("index artifact page", async () => {
    await page.goto(`${base}/console/repository?name=${encodeURIComponent(indexRepo)}`);
    await page.locator("table.artifacts .pill", { hasText: "index of 2" }).waitFor();
    await page.locator("table.artifacts td.mono a").first().click();
    await page.waitForURL(/\/console\/artifact\?/);
    await page.locator("h2", { hasText: "Platforms" }).waitFor();
    for (const p of ["linux/amd64", "linux/arm64"]) {
      await page.locator("table.list td", { hasText: p }).waitFor();
    }
    await shot("artifact-index");
  });

  // ---- a robot account, its secret shown once ---------------------------------
  await run("robot account", async () => {
    await page.goto(`${base}/console/project?name=${encodeURIComponent(project)}&tab=robots`);
    const form = page.locator('form[data-api-path="/api/v2.0/robots"]');
    await form.locator('input[name="name"]').fill(robot);
    await form.getByRole("checkbox", { name: "pull" }).check();
    await form.locator('button[type="submit"]').click();
    const secretBox = form.locator(".secret");
    await secretBox.waitFor({ state: "visible" });
    const secret = (await secretBox.locator("code").innerText()).trim();
    check(secret.length >= 16, `secret ${JSON.stringify(secret)} is too short`);
    const created = await form.locator(".result").innerText();
    const m = /^Created (.+)\.$/.exec(created.trim());
    check(m, `the form says ${JSON.stringify(created)}`);
    check(m[1].includes(robot), `the created robot ${m[1]} is not ${robot}`);
    result.robot_name = m[1];
    result.robot_secret = secret;
    await shot("robots");
    // Shown once: after a reload the robot is listed, its secret is not.
    await page.reload();
    await page.locator("table.list td", { hasText: m[1] }).waitFor();
    check(!(await page.content()).includes(secret), "the secret is still on the page after a reload");
  });

  // ---- a quota, as the system administrator --------------------------------
  await run("set quota", async () => {
    await page.goto(`${base}/console/project?name=${encodeURIComponent(newProject)}`);
    const quota = page.locator("section.settings form", { has: page.getByLabel("Storage quota") });
    check(await quota.count() === 1, "no \"Set quota\" form in the project's Settings");
    await quota.getByLabel("Storage quota").fill("1");
    await Promise.all([page.waitForEvent("load"), quota.getByRole("button", { name: "Set quota" }).click()]);
    await page.locator(".facts", { hasText: "of 1.0 GiB" }).waitFor();
    // Then none at all: any push into the project is over it (the Rust side
    // pushes and expects a refusal).
    await quota.getByLabel("Storage quota").fill("0");
    await Promise.all([page.waitForEvent("load"), quota.getByRole("button", { name: "Set quota" }).click()]);
    await settled();
    check(await page.locator("section.settings .result.error").count() === 0, "setting the quota failed");
  });

  // ---- delete a tag with its × button --------------------------------------
  await run("delete tag", async () => {
    const doomed = tags[tags.length - 1];
    await page.goto(`${base}/console/repository?name=${encodeURIComponent(repo)}`);
    let dialogText = null;
    page.once("dialog", (d) => {
      dialogText = d.message();
      d.accept();
    });
    const x = page.getByRole("button", { name: `Delete tag ${doomed}`, exact: true });
    await Promise.all([page.waitForEvent("load"), x.click()]);
    check(dialogText === `Delete tag ${doomed}?`, `confirm() said ${JSON.stringify(dialogText)}`);
    await page.locator("td.tags").first().waitFor();
    check(await page.getByRole("button", { name: `Delete tag ${doomed}`, exact: true }).count() === 0,
      `tag ${doomed} is still shown`);
    for (const t of tags.slice(0, -1)) {
      check(await page.getByRole("button", { name: `Delete tag ${t}`, exact: true }).count() === 1,
        `tag ${t} went too`);
    }
  });

  // ---- garbage collection -----------------------------------------------------
  await run("garbage collection", async () => {
    await page.goto(`${base}/console/admin/gc`);
    const runsBefore = await page.locator("table.list tbody tr").count();
    await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Run GC now" }).click()]);
    await page.locator("table.list tbody tr").nth(runsBefore).waitFor();
    await shot("gc");
  });

  // ---- sign out ------------------------------------------------------------------
  await run("sign out", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${base}/console/login`);
    await page.locator('input[name="principal"]').waitFor();
    await page.goto(`${base}/console/projects`);
    await page.waitForURL(/\/console\/login\?next=/);

  });  step = "console errors";
  if (problems.length) failures.push(`page or console errors:\n  ${problems.join("\n  ")}`);
  writeFileSync(resultFile, JSON.stringify(result));
  if (failures.length) {
    console.error(`browser.mjs: ${failures.length} step(s) failed:\n${failures.map((f) => `- ${f}`).join("\n")}`);
    process.exitCode = 1;
  } else {
    console.log(`browser.mjs: all steps passed; screenshots in ${shots}`);
  }
} catch (e) {
  console.error(`browser.mjs: failed at step "${step}": ${e.message}`);
  if (failures.length) console.error(failures.join("\n"));
  if (problems.length) console.error(`browser.mjs: also seen:\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
