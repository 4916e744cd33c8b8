// Express + express-session + connect-redis peer for bench/compare.
//
// The same login + forward-auth flow as sessiond, written the way the libraries' own docs
// show it, with their default behaviour kept:
//   POST /v1/sessions  login: regenerate + save a session document, answer 201 with Set-Cookie sid=...
//   GET  /v1/auth      forward-auth: 200 + X-User-Id / X-Session-Id for a live session, else 401
//   GET  /healthz      200
//
// Env: PORT (required), REDIS_URL (default redis://127.0.0.1:6379),
//      SESSION_SECRET (default below; fixed so cookies survive restarts).
//
// Single process on purpose (no cluster module): the bench machine has 2 cores and the load
// generator uses the other one, so this peer gets one core, as sessiond does.

import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set to a TCP port');
  process.exit(2);
}
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const secret = process.env.SESSION_SECRET || 'bench-peer-express-fixed-secret-change-me';
const DAY_MS = 24 * 60 * 60 * 1000;

const redis = createClient({ url: redisUrl });
redis.on('error', (err) => console.error('redis:', err.message));
await redis.connect();

const app = express();
app.disable('x-powered-by');

// Before the session middleware: a health check never touches Redis.
app.get('/healthz', (req, res) => res.status(200).end());

app.use(
  session({
    store: new RedisStore({ client: redis }), // prefix "sess:", TTL from cookie expiry
    name: 'sid',
    secret,
    resave: false,
    saveUninitialized: false,
    rolling: false,
    cookie: { httpOnly: true, sameSite: 'lax', secure: false, maxAge: DAY_MS },
  }),
);

// Login. The backend has checked the password; start a fresh session (regenerate guards against
// session fixation), fill the document, save it: express-session's own login example.
// Redis: DEL of the request's (new or old) id from regenerate, SET EX from save, and a second
// identical SET EX when the response ends, because express-session 1.19.0 does not see the
// explicit save of a regenerated session (expressjs/session#935, still open).
app.post('/v1/sessions', express.json(), (req, res, next) => {
  const body = req.body ?? {};
  if (typeof body.userId !== 'string' || body.userId === '') {
    res.status(400).json({ error: 'userId (string) required' });
    return;
  }
  req.session.regenerate((err) => {
    if (err) return next(err);
    const now = new Date().toISOString();
    const s = req.session;
    s.userId = body.userId;
    s.sessionId = req.sessionID;
    s.createdAt = now;
    s.lastActivity = now;
    s.userData = body.userData ?? {};
    s.metadata = body.metadata ?? {};
    s.save((err) => {
      if (err) return next(err);
      res.status(201).json({ sessionId: req.sessionID, userId: s.userId });
    });
  });
});

// Forward-auth. express-session has already loaded the session (GET sess:<id>) from the cookie;
// nothing here modifies it, so it is not saved again, but express-session still calls the
// store's touch (EXPIRE) before the response ends, because the cookie has a maxAge.
app.get('/v1/auth', (req, res) => {
  const s = req.session;
  if (s && typeof s.userId === 'string') {
    res.set('X-User-Id', s.userId);
    res.set('X-Session-Id', s.sessionId ?? req.sessionID);
    res.status(200).end();
  } else {
    res.status(401).end();
  }
});

// Store errors (Redis down) answer 503 with an empty body, like sessiond.
app.use((err, req, res, next) => {
  if (res.headersSent) return next(err);
  console.error(err);
  res.status(err.status && err.status < 500 ? err.status : 503).end();
});

const server = app.listen(port, '127.0.0.1', (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`express peer listening on 127.0.0.1:${port}, redis ${redisUrl}`);
});

function shutdown() {
  server.close(() => redis.close().finally(() => process.exit(0)));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
