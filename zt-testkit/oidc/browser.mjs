// A real browser for zt's tests: headless Chromium driven by playwright-core through the
// OpenID Provider's own login and consent pages.
//
// Usage:
//   node browser.mjs login URL LOGIN
//     Opens URL (an authorization request), signs in as LOGIN, accepts the consent and waits
//     until the browser is sent to http://127.0.0.1:PORT/callback...; prints that URL.
//   node browser.mjs device VERIFICATION_URI USER_CODE LOGIN
//     Opens the verification page, enters USER_CODE (unless the URI carries it already),
//     confirms, signs in as LOGIN, accepts the consent and waits for the success page.
//
// Exits 0 on success; 1 with a message on stderr on a timeout (30 s), an error page of the
// provider (its text is printed) or a callback that could not be delivered. Chromium is
// /usr/bin/chromium unless ZT_TEST_CHROMIUM says otherwise; requests to any host other than
// 127.0.0.1 are refused (the provider's pages link web fonts), so nothing waits on the network.

import process from 'node:process';

import { chromium } from 'playwright-core';

const TIMEOUT_MS = 30_000;
const CALLBACK = /^http:\/\/127\.0\.0\.1:\d+\/callback(\?|$)/;

function usage() {
  process.stderr.write('usage: node browser.mjs login URL LOGIN | device VERIFICATION_URI USER_CODE LOGIN\n');
  process.exit(2);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'login' && args.length !== 2) usage();
if (mode === 'device' && args.length !== 3) usage();
if (mode !== 'login' && mode !== 'device') usage();

class Failure extends Error {}

// Whatever hangs (a browser that does not close), the process ends within a minute.
setTimeout(() => {
  process.stderr.write(`browser.mjs ${mode}: still running after 60 s; giving up\n`);
  process.exit(1);
}, 60_000).unref();

// The text of the provider's error page, when the page is one.
async function errorText(page) {
  const title = await page.title();
  if (!/something went wrong/i.test(title)) return null;
  return (await page.locator('body').innerText()).replace(/\s+\n/g, '\n').trim();
}

// One step on whatever page is showing: sign in, accept the consent, enter or confirm the
// user code. Returns what it did ('' when the page is none of these, say while it loads).
// A navigation in the middle of a step destroys the page's execution context; the caller
// then simply tries again on the next page.
async function step(page, login, userCode) {
  // Clicks a submit button and waits until the page it leads to is committed.
  const submit = async (button) => {
    const navigated = page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() });
    await button.click({ noWaitAfter: true });
    await navigated;
  };
  const error = await errorText(page);
  if (error !== null) throw new Failure(`the OpenID Provider shows an error page at ${page.url()}:\n${error}`);
  const title = await page.title();
  if (title === 'Sign-in Success') return 'success';
  const loginInput = page.locator('input[name=login]');
  if (await loginInput.count()) {
    await loginInput.fill(login);
    await page.locator('input[name=password]').fill('any password');
    await submit(page.locator('button[type=submit]').first());
    return 'login';
  }
  const codeInput = page.locator('input[name=user_code]:not([type=hidden])');
  if (await codeInput.count()) {
    if (userCode === null) throw new Failure(`${page.url()} asks for a user code`);
    if (await page.locator('p.red').count()) {
      throw new Failure(`the OpenID Provider refused the user code: ${(await page.locator('body').innerText()).trim()}`);
    }
    await codeInput.fill(userCode);
    await submit(page.locator('button[type=submit][form="op.deviceInputForm"]'));
    return 'user code';
  }
  const confirm = page.locator('button[autofocus][type=submit]');
  if (await confirm.count()) {
    // The device confirmation ("Continue", not "[ Abort ]") and the consent page.
    await submit(confirm.first());
    return 'confirm';
  }
  return '';
}

async function run() {
  const executablePath = process.env.ZT_TEST_CHROMIUM || '/usr/bin/chromium';
  const chromiumArgs = [];
  if (typeof process.getuid === 'function' && process.getuid() === 0) chromiumArgs.push('--no-sandbox');
  const browser = await chromium.launch({ executablePath, headless: true, args: chromiumArgs, timeout: TIMEOUT_MS });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    await context.route(
      (url) => url.hostname !== '127.0.0.1',
      (route) => route.abort('blockedbyclient'),
    );
    const page = await context.newPage();
    page.setDefaultTimeout(5_000);

    let done = null;
    let outcome = null;
    if (mode === 'login') {
      // The loopback callback: settled once its response came back (the listener got it),
      // failed when nothing answered there.
      done = new Promise((resolve, reject) => {
        page.on('response', (response) => {
          if (CALLBACK.test(response.url()) && response.request().isNavigationRequest()) resolve(response.url());
        });
        page.on('requestfailed', (request) => {
          if (CALLBACK.test(request.url())) {
            reject(new Failure(`the callback ${request.url()} could not be delivered: ${request.failure()?.errorText}`));
          }
        });
      });
      done.then((url) => { outcome = url; }, (e) => { outcome = e; });
    }

    const [url, login, userCode] = mode === 'login' ? [args[0], args[1], null] : [args[0], args[2], args[1]];
    const withCode = mode === 'device' && new URL(url).searchParams.has('user_code');
    // Chromium aborts a navigation with ERR_NETWORK_CHANGED when an interface comes or goes
    // on the machine (tests running beside this one add and remove veth pairs): go again.
    for (let attempt = 1; ; attempt++) {
      try {
        await page.goto(url, { waitUntil: 'commit', timeout: TIMEOUT_MS });
        break;
      } catch (e) {
        if (attempt >= 5 || !String(e?.message).includes('ERR_NETWORK_CHANGED')) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }

    const deadline = Date.now() + TIMEOUT_MS;
    const seen = [];
    for (;;) {
      if (outcome instanceof Error) throw outcome;
      if (typeof outcome === 'string') return outcome;
      if (Date.now() > deadline) {
        throw new Failure(`timed out after ${TIMEOUT_MS / 1000} s at ${page.url()} (steps done: ${seen.join(', ') || 'none'})`);
      }
      let did = '';
      try {
        did = await step(page, login, withCode ? null : userCode);
      } catch (e) {
        if (e instanceof Failure) throw e;
        // The page navigated under the step; look again.
      }
      if (did === 'success') return 'device approved';
      if (did) seen.push(did);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await browser.close().catch(() => {});
  }
}

run().then(
  (result) => {
    process.stdout.write(`${result}\n`);
    process.exit(0);
  },
  (e) => {
    process.stderr.write(`browser.mjs ${mode}: ${e.message}\n`);
    process.exit(1);
  },
);
