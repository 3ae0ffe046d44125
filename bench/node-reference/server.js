#!/usr/bin/env node
// BitGo Express's `POST /api/v2/ofc/signPayload` (normal mode), with the real BitGo SDK packages,
// as the reference ofc-signer is benchmarked against (bench/load.sh --node).
//
// Per request, exactly the steps of Express 16.3.7 (spec express-compat.md §0.2 and §1.4;
// modules/express/src/clientRoutes.ts `prepareBitGo` + `handleV2OFCSignPayload`):
//   1. a fresh SDK client for the caller's `Authorization: Bearer <token>` (env `custom`,
//      customRootURI; HMAC v2 requests and response verification, as the SDK does by default);
//   2. `bitgo.coin('ofc').wallets().get({ id })`            -> GET /api/v2/ofc/wallet/<id>
//   3. passphrase = body `walletPassphrase` (unless null/undefined), else WALLET_<id>_PASSPHRASE;
//   4. `wallet.toTradingAccount().signPayload({ payload, walletPassphrase })`, which in the SDK
//      does GET /api/v2/ofc/key/<keys[0]>, `bitgo.decryptAsync` (SJCL v1 or Argon2id v2) and
//      `coin.signMessage({ prv }, payload)`;
//   5. answers 200 `{"payload": <string>, "signature": <hex>}`.
//
// Not reproduced (they only make Express slower, so the comparison favours Node): morgan
// access logging, io-ts request validation, the Express router and connect-timeout.
// The SDK's fire-and-forget `GET /api/v1/client/constants` is treated as answered once (the
// sandbox does not serve it; real BitGo answers it with a one-hour TTL, so Express sends it
// about once an hour): the cache is seeded once at startup, below.
//
// Usage: node server.js --customrooturi http://127.0.0.1:PORT [--port 3090] [--bind 127.0.0.1]

'use strict';

const http = require('http');
const { BitGoAPI } = require('@bitgo/sdk-api');
const { coins } = require('@bitgo/sdk-core');

const SDK_VERSION = require('@bitgo/sdk-api/package.json').version;
const CORE_VERSION = require('@bitgo/sdk-core/package.json').version;

function parseArgs(argv) {
  const args = { port: 3090, bind: '127.0.0.1', customRootURI: process.env.BITGO_CUSTOM_ROOT_URI };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--port':
      case '-p':
        args.port = Number(value);
        i++;
        break;
      case '--bind':
      case '-b':
        args.bind = value;
        i++;
        break;
      case '--customrooturi':
      case '-u':
        args.customRootURI = value;
        i++;
        break;
      default:
        throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!args.customRootURI) {
    throw new Error('--customrooturi is required');
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const USER_AGENT = `BitGoExpress/node-reference BitGoJS/sdk-api-${SDK_VERSION}`;

// Register 'ofc' as the `bitgo` package's coin factory does, and seed the SDK's client-constants
// cache (`clientConstants: {}`) as a first successful `GET /api/v1/client/constants` would.
new BitGoAPI({ env: 'custom', customRootURI: args.customRootURI, clientConstants: {} }).register(
  'ofc',
  coins.Ofc.createInstance
);

// clientRoutes.ts `prepareBitGo`: the token from `Authorization` (exactly "bearer <token>").
function accessTokenFrom(req) {
  const header = req.headers.authorization;
  if (!header) return undefined;
  const parts = header.split(' ');
  if (parts.length === 2 && parts[0].toLowerCase() === 'bearer') return parts[1];
  return undefined;
}

function prepareBitGo(req) {
  const userAgent = req.headers['user-agent'] ? `${USER_AGENT} ${req.headers['user-agent']}` : USER_AGENT;
  return new BitGoAPI({
    env: 'custom',
    customRootURI: args.customRootURI,
    accessToken: accessTokenFrom(req),
    userAgent,
  });
}

// clientRoutes.ts `handleV2OFCSignPayload` (normal mode).
async function handleV2OFCSignPayload(req, body) {
  const { walletId, payload, walletPassphrase: bodyWalletPassphrase } = body;
  if (typeof walletId !== 'string' || payload === undefined) {
    throw Object.assign(new Error('Missing required field walletId or payload'), { status: 400 });
  }
  const bitgo = prepareBitGo(req);
  const wallet = await bitgo.coin('ofc').wallets().get({ id: walletId });
  if (wallet === undefined) {
    throw Object.assign(new Error(`Could not find OFC wallet ${walletId}`), { status: 404 });
  }
  const walletPassphrase = bodyWalletPassphrase ?? process.env[`WALLET_${wallet.id()}_PASSPHRASE`];
  const tradingAccount = wallet.toTradingAccount();
  const stringifiedPayload = typeof payload === 'string' ? payload : JSON.stringify(payload);
  const signature = await tradingAccount.signPayload({ payload: stringifiedPayload, walletPassphrase });
  return { payload: stringifiedPayload, signature };
}

function send(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

// clientRoutes.ts `handleRequestHandlerError` (without the secret redaction).
function sendError(res, err) {
  const message = (err && err.message) || 'local error';
  const base = err && err.result && typeof err.result === 'object' ? err.result : { error: message };
  const out = {
    ...base,
    message,
    name: (err && err.name) || 'BitGoExpressError',
    bitgoJsVersion: `sdk-core-${CORE_VERSION}`,
    bitgoExpressVersion: 'node-reference',
  };
  if (err && err.code) out.code = err.code;
  const status = (err && Number(err.status)) || 500;
  if (status >= 500) console.error(`error ${status}: ${message}`);
  send(res, status, out);
}

const server = http.createServer((req, res) => {
  const path = (req.url || '').split('?')[0];
  if (req.method === 'GET' && (path === '/api/v2/pingexpress' || path === '/api/v1/pingexpress')) {
    send(res, 200, { status: 'express server is ok!' });
    return;
  }
  if (req.method !== 'POST' || path !== '/api/v2/ofc/signPayload') {
    send(res, 404, { error: `Cannot ${req.method} ${path}` });
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      send(res, 400, { error: 'invalid JSON body' });
      return;
    }
    handleV2OFCSignPayload(req, body).then(
      (result) => send(res, 200, result),
      (err) => sendError(res, err)
    );
  });
});

// Express's server defaults (--keepalivetimeout 5000, --headerstimeout 60000).
server.keepAliveTimeout = 5000;
server.headersTimeout = 60000;
server.listen(args.port, args.bind, () => {
  console.log(`node reference (sdk-api ${SDK_VERSION}, sdk-core ${CORE_VERSION}) listening on http://${args.bind}:${args.port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
