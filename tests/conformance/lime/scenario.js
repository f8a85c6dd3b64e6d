'use strict';
// Drives the UNMODIFIED npm LIME clients (lime-js 3.0.1 + lime-transport-websocket 2.0.3)
// against a running tidings server.
//
//   node scenario.js <scenario> '<json args>'
//
// Every scenario prints exactly one JSON line on stdout: {"ok": true, ...observations} or
// {"ok": false, "error": "..."}; the pytest side (tests/conformance/test_lime_js.py) asserts on
// it. All waiting is event driven: a promise per expected envelope, resolved from
// channel.onMessage / onNotification / onCommand, rejected after a timeout. No sleeps.
//
// Common args: ws (server URI), domain, timeoutMs, and per-client {name, password | key |
// guest, instance, ws (this client's server, when not args.ws)}.

const Lime = require('lime-js');
const WebSocketTransport = require('lime-transport-websocket');

const [, , scenarioName, rawArgs] = process.argv;
const args = JSON.parse(rawArgs || '{}');
const TIMEOUT = args.timeoutMs || 5000;
const DOMAIN = args.domain || 'localhost';

const b64 = (text) => Buffer.from(text, 'utf8').toString('base64');

function withTimeout(promise, what, ms = TIMEOUT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A lime-js ClientChannel plus an inbox: every message / notification / command the channel
// hands to the application is recorded, and wait() resolves on the first unconsumed envelope
// matching a predicate (already received or still to come).
class Client {
  constructor(label, transport, channel) {
    this.label = label;
    this.transport = transport;
    this.channel = channel;
    this.inbox = { message: [], notification: [], command: [] };
    this.waiters = [];
    this.closed = false;
    channel.onMessage = (m) => this._push('message', m);
    channel.onNotification = (n) => this._push('notification', n);
    channel.onCommand = (c) => this._push('command', c);
    channel.onSessionFinished = (s) => { this.finished = s; };
    channel.onSessionFailed = (s) => { this.failed = s; };
  }

  _push(kind, envelope) {
    const copy = JSON.parse(JSON.stringify(envelope));
    const entry = { envelope: copy, taken: false };
    this.inbox[kind].push(entry);
    for (const waiter of this.waiters) {
      if (!waiter.done && waiter.kind === kind && waiter.predicate(copy)) {
        waiter.done = true;
        entry.taken = true;
        waiter.resolve(copy);
        break;
      }
    }
    this.waiters = this.waiters.filter((w) => !w.done);
  }

  wait(kind, predicate, what) {
    const found = this.inbox[kind].find((e) => !e.taken && predicate(e.envelope));
    if (found) {
      found.taken = true;
      return Promise.resolve(found.envelope);
    }
    const waiter = { kind, predicate, done: false };
    const promise = new Promise((resolve) => { waiter.resolve = resolve; });
    this.waiters.push(waiter);
    return withTimeout(promise, `${this.label}: ${what}`).catch((error) => {
      waiter.done = true;
      throw error;
    });
  }

  notification(id, event) {
    return this.wait('notification', (n) => n.id === id && n.event === event,
      `notification ${event} for ${id}`);
  }

  all(kind) {
    return this.inbox[kind].map((e) => e.envelope);
  }

  command(command) {
    const full = Object.assign({ id: Lime.Guid() }, command);
    // processCommand has its own 6 s timeout (lime-js Channel); keep ours as the outer bound.
    return withTimeout(this.channel.processCommand(full, TIMEOUT), `${this.label}: response to ${full.method} ${full.uri}`);
  }

  async finish() {
    if (this.channel.state === Lime.SessionState.ESTABLISHED) {
      return withTimeout(this.channel.sendFinishingSession(), `${this.label}: finished session`);
    }
    return undefined;
  }
}

function authenticationFor(spec) {
  if (spec.guest) return new Lime.GuestAuthentication();
  if (spec.key !== undefined) return new Lime.KeyAuthentication(b64(spec.key));
  return new Lime.PlainAuthentication(b64(spec.password));
}

function identityFor(spec) {
  if (spec.identity) return spec.identity;
  // spec.domain: this client's own server's domain (tests/federation: two servers)
  if (spec.guest) return `guest-${Lime.Guid()}@${spec.domain || DOMAIN}`;
  return `${spec.name}@${spec.domain || DOMAIN}`;
}

// Opens the transport and establishes a session exactly the way an application would. Resolves
// with a Client; rejects with whatever lime-js rejects with (for a failed session: the
// session envelope itself, not an Error, reference section 3.5).
async function connect(spec, label) {
  const transport = new WebSocketTransport();
  transport.onClose = () => {};
  // spec.ws: this client's own server (tests/cluster puts sender and recipient on different
  // nodes of a cluster); args.ws otherwise
  await withTimeout(transport.open(spec.ws || args.ws), `${label}: websocket open`);
  const channel = new Lime.ClientChannel(transport, true, spec.autoNotifyReceipt !== false);
  const client = new Client(label, transport, channel);
  // JSON has no undefined: "instance": null means "the app passed no instance", which lime-js
  // puts on the wire as the literal "name@domain/undefined" (reference section 2.3).
  let instance = label;
  if (Object.prototype.hasOwnProperty.call(spec, 'instance')) {
    instance = spec.instance === null ? undefined : spec.instance;
  }
  client.session = await withTimeout(
    channel.establishSession(
      Lime.SessionCompression.NONE,
      Lime.SessionEncryption.NONE,
      identityFor(spec),
      authenticationFor(spec),
      instance,
    ),
    `${label}: established session`,
  );
  return client;
}

const RECEIPT = 'application/vnd.lime.receipt+json';
const PRESENCE = 'application/vnd.lime.presence+json';
const CONTACT = 'application/vnd.lime.contact+json';
const DELEGATION = 'application/vnd.lime.delegation+json';

function setReceipt(client, events) {
  return client.command({ method: 'set', uri: '/receipt', type: RECEIPT, resource: { events } });
}

const scenarios = {
  // Sections 3.2, 3.4, 10.1: establish with any scheme, then finish.
  async establish() {
    const client = await connect(args.client, 'conf');
    const result = {
      established: client.session,
      localNode: client.channel.localNode,
      remoteNode: client.channel.remoteNode,
      state: client.channel.state,
    };
    result.finished = await client.finish();
    result.stateAfterFinish = client.channel.state;
    return result;
  },

  // Sections 3.2 step 3, 3.5: bad credentials → establishSession rejects with the failed session.
  async establishFails() {
    try {
      const client = await connect(args.client, 'bad');
      await client.finish();
      return { rejected: false };
    } catch (error) {
      if (error instanceof Error) return { rejected: true, isError: true, message: error.message };
      return { rejected: true, isError: false, session: error };
    }
  },

  // Sections 4, 5, 8.2: sender → recipient, notifications back to the sender.
  async sendReceive() {
    const sender = await connect(args.sender, 'sender');
    const recipient = await connect(args.recipient, 'recipient');
    let receiptResponse = null;
    if (args.receipt) receiptResponse = await setReceipt(sender, args.receipt);
    const id = Lime.Guid();
    const message = {
      id, to: args.to, type: args.type || 'text/plain', content: args.content === undefined ? 'hello' : args.content,
    };
    sender.channel.sendMessage(message);
    const received = await recipient.wait('message', (m) => m.id === id, `message ${id}`);
    // lime-js (autoNotifyReceipt) sends {id, to: message.from, event: "received"}; the server
    // forwards it to the sender. Envelopes on one socket keep their order, so once `received`
    // is here, any accepted/dispatched the server sent earlier is here as well.
    const receivedNotification = await sender.notification(id, 'received');
    let consumedNotification = null;
    if (args.consume) {
      // What an app does once the user read the message (lime-js has no helper for it).
      recipient.channel.sendNotification({ id, to: received.from, event: 'consumed' });
      consumedNotification = await sender.notification(id, 'consumed');
    }
    const result = {
      id,
      receiptResponse,
      senderNode: sender.channel.localNode,
      recipientNode: recipient.channel.localNode,
      delivered: received,
      receivedNotification,
      consumedNotification,
      // Only this message's notifications: the shared server may hold older ones for the node.
      senderNotifications: sender.all('notification').filter((n) => n.id === id),
    };
    await sender.finish();
    await recipient.finish();
    return result;
  },

  // Sections 5, 7 (42), 9.1: a message to an account that does not exist.
  async unknownDestination() {
    const sender = await connect(args.sender, 'sender');
    const id = Lime.Guid();
    sender.channel.sendMessage({ id, to: args.to, type: 'text/plain', content: 'anyone?' });
    const failed = await sender.notification(id, 'failed');
    const result = { id, senderNode: sender.channel.localNode, failed, notifications: sender.all('notification') };
    await sender.finish();
    return result;
  },

  // Sections 4, 8.2, 9.3: the recipient connects only after the message was sent.
  async offlineDelivery() {
    const sender = await connect(args.sender, 'sender');
    const receiptResponse = await setReceipt(sender, ['accepted', 'dispatched']);
    const id = Lime.Guid();
    sender.channel.sendMessage({ id, to: args.to, type: 'text/plain', content: 'while you were out' });
    const accepted = await sender.notification(id, 'accepted');
    const recipient = await connect(args.recipient, 'recipient');
    const delivered = await recipient.wait('message', (m) => m.id === id, `queued message ${id}`);
    const dispatched = await sender.notification(id, 'dispatched');
    const receivedNotification = await sender.notification(id, 'received');
    const result = {
      id,
      receiptResponse,
      senderNode: sender.channel.localNode,
      recipientNode: recipient.channel.localNode,
      accepted,
      delivered,
      dispatched,
      receivedNotification,
    };
    await recipient.finish();
    await sender.finish();
    return result;
  },

  // Sections 4, 8.2: a message stays queued until the destination sends `received`.
  async redelivery() {
    const sender = await connect(args.sender, 'sender');
    const id = Lime.Guid();
    sender.channel.sendMessage({ id, to: args.to, type: 'text/plain', content: 'ack me' });
    // First session: an app that does not acknowledge (autoNotifyReceipt = false).
    const silent = await connect(Object.assign({}, args.recipient, { autoNotifyReceipt: false }), 'inbox');
    const first = await silent.wait('message', (m) => m.id === id, `first delivery of ${id}`);
    await silent.finish();
    // Second session, same node, acknowledging: the message comes again.
    const acking = await connect(args.recipient, 'inbox');
    const second = await acking.wait('message', (m) => m.id === id, `second delivery of ${id}`);
    const receivedNotification = await sender.notification(id, 'received');
    await acking.finish();
    // Third session, same node: nothing left of `id`. The marker is sent after the session is
    // established, so any backlog would be written before it.
    const third = await connect(args.recipient, 'inbox');
    const marker = Lime.Guid();
    sender.channel.sendMessage({ id: marker, to: args.to, type: 'text/plain', content: 'marker' });
    await third.wait('message', (m) => m.id === marker, `marker ${marker}`);
    const result = {
      id,
      marker,
      first,
      second,
      receivedNotification,
      thirdSessionMessageIds: third.all('message').map((m) => m.id),
      recipientNode: third.channel.localNode,
    };
    await third.finish();
    await sender.finish();
    return result;
  },

  // Section 4: a message without id is fire-and-forget (delivered, no notifications).
  async fireAndForget() {
    const sender = await connect(args.sender, 'sender');
    const recipient = await connect(args.recipient, 'recipient');
    const receiptResponse = await setReceipt(sender, ['accepted', 'dispatched']);
    const content = `no id ${Lime.Guid()}`;
    sender.channel.sendMessage({ to: args.to, type: 'text/plain', content });
    const delivered = await recipient.wait('message', (m) => m.content === content, 'message without id');
    // A message with an id right behind it: its `accepted` arrives after anything the server
    // might have sent about the first one (one socket, in order).
    const id = Lime.Guid();
    sender.channel.sendMessage({ id, to: args.to, type: 'text/plain', content: 'with id' });
    const accepted = await sender.notification(id, 'accepted');
    await recipient.wait('message', (m) => m.id === id, `message ${id}`);
    const result = {
      receiptResponse, delivered, accepted, senderNode: sender.channel.localNode,
      notificationsWithoutId: sender.all('notification').filter((n) => !n.id),
    };
    await recipient.finish();
    await sender.finish();
    return result;
  },

  // Sections 6.1, 8.3: client → server ping through processCommand.
  async ping() {
    const client = await connect(args.client, 'pinger');
    const response = await client.command({ method: 'get', uri: '/ping' });
    await client.finish();
    return { response, localNode: client.channel.localNode };
  },

  // Section 8.1: set then get the session's own presence.
  async presence() {
    const client = await connect(args.client, 'presence');
    const set = await client.command({
      method: 'set', uri: '/presence', type: PRESENCE, resource: args.presence,
    });
    const get = await client.command({ method: 'get', uri: '/presence' });
    await client.finish();
    return { set, get };
  },

  // Sections 8.5, 8.8: the roster.
  async contacts() {
    const client = await connect(args.client, 'roster');
    const empty = await client.command({ method: 'get', uri: '/contacts' });
    const set = await client.command({
      method: 'set', uri: '/contacts', type: CONTACT, resource: args.contact,
    });
    const one = await client.command({ method: 'get', uri: `/contacts/${args.contact.identity}` });
    const list = await client.command({ method: 'get', uri: '/contacts' });
    const missing = await client.command({ method: 'get', uri: `/contacts/${args.missing}` });
    await client.finish();
    return { empty, set, one, list, missing };
  },

  // Sections 6, 7 (62, 63, 64), 12 MUST 9: requests to the server, one response each.
  async commands() {
    const client = await connect(args.client, 'commands');
    const responses = [];
    for (const command of args.commands) responses.push(await client.command(command));
    await client.finish();
    return { responses, localNode: client.channel.localNode };
  },

  // Sections 6.1, 9.1, 12 MUST 9: a client must never get an answer to a *response* it sends
  // (lime-js sends one for every server ping); only requests are answered.
  async responsesNotAnswered() {
    const client = await connect(args.client, 'responder');
    const ids = [Lime.Guid(), Lime.Guid()];
    const ping = { method: 'get', status: 'success', type: 'application/vnd.lime.ping+json', resource: {} };
    client.channel.sendCommand(Object.assign({ id: ids[0], to: args.serverNode }, ping));
    client.channel.sendCommand(Object.assign({ id: ids[1] }, ping));
    // Answered in order: anything about ids[0]/ids[1] would come before this response.
    const after = await client.command({ method: 'get', uri: '/ping' });
    const result = {
      after,
      unexpected: client.all('command').filter((c) => ids.includes(c.id)),
      unexpectedNotifications: client.all('notification').filter((n) => ids.includes(n.id)),
    };
    await client.finish();
    return result;
  },

  // Sections 6.1, 9.1: a command to another client is forwarded; lime-js answers a ping by
  // itself (autoReplyPings) and the response is forwarded back.
  async clientPing() {
    const caller = await connect(args.caller, 'caller');
    const callee = await connect(args.callee, 'callee');
    const byNode = await caller.command({ method: 'get', uri: '/ping', to: callee.channel.localNode });
    const byIdentity = await caller.command({ method: 'get', uri: '/ping', to: args.calleeIdentity });
    const result = {
      byNode,
      byIdentity,
      callerNode: caller.channel.localNode,
      calleeNode: callee.channel.localNode,
      calleeSaw: callee.all('command'),
    };
    await callee.finish();
    await caller.finish();
    return result;
  },

  // Sections 6, 8.1, 8.5: subscribe to a contact's presence, get observe pushes.
  async presenceSubscribe() {
    const owner = await connect(args.owner, 'owner');
    const watcher = await connect(args.watcher, 'watcher');
    const ownerIdentity = identityFor(args.owner);
    const watcherIdentity = identityFor(args.watcher);
    const uri = `lime://${ownerIdentity}/presence`;
    const isObserve = (status) => (c) => c.method === 'observe' && c.uri === uri
      && c.resource && c.resource.status === status;
    // Not shared yet: the owner has no roster entry for the watcher.
    const refused = await watcher.command({ method: 'subscribe', uri });
    const share = await owner.command({
      method: 'set', uri: '/contacts', type: CONTACT,
      resource: { identity: watcherIdentity, sharePresence: true },
    });
    const ownerSet = await owner.command({
      method: 'set', uri: '/presence', type: PRESENCE, resource: { status: 'available', routingRule: 'identity' },
    });
    const subscribed = await watcher.command({ method: 'subscribe', uri });
    const initial = await watcher.wait('command', isObserve('available'), 'observe (available)');
    const change = await owner.command({
      method: 'set', uri: '/presence', type: PRESENCE, resource: { status: 'busy', routingRule: 'identity' },
    });
    const pushed = await watcher.wait('command', isObserve('busy'), 'observe (busy)');
    const result = { refused, share, ownerSet, subscribed, initial, change, pushed, ownerNode: owner.channel.localNode };
    await watcher.finish();
    await owner.finish();
    return result;
  },

  // Sections 2.4, 8.6: sending on behalf of another identity.
  async delegation() {
    const owner = await connect(args.owner, 'owner');
    const delegate = await connect(args.delegate, 'delegate');
    const recipient = await connect(args.recipient, 'recipient');
    const ownerIdentity = `${args.owner.name}@${DOMAIN}`;
    const delegateIdentity = `${args.delegate.name}@${DOMAIN}`;
    const recipientIdentity = `${args.recipient.name}@${DOMAIN}`;
    const send = () => {
      const id = Lime.Guid();
      delegate.channel.sendMessage({ id, from: ownerIdentity, to: recipientIdentity, type: 'text/plain', content: 'on behalf' });
      return id;
    };
    const deniedId = send();
    const denied = await delegate.notification(deniedId, 'failed');
    const granted = await owner.command({
      method: 'set', uri: '/delegations', type: DELEGATION, resource: { target: delegateIdentity },
    });
    const allowedId = send();
    const delivered = await recipient.wait('message', (m) => m.id === allowedId, `delegated message ${allowedId}`);
    const result = {
      denied, granted, delivered, delegateNode: delegate.channel.localNode,
      recipientMessages: recipient.all('message'),
    };
    await recipient.finish();
    await delegate.finish();
    await owner.finish();
    return result;
  },
};

async function main() {
  const scenario = scenarios[scenarioName];
  if (!scenario) throw new Error(`unknown scenario ${JSON.stringify(scenarioName)}`);
  return scenario();
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(Object.assign({ ok: true }, result))}\n`);
    process.exit(0);
  },
  (error) => {
    const text = error instanceof Error ? error.stack || error.message : JSON.stringify(error);
    process.stdout.write(`${JSON.stringify({ ok: false, error: text })}\n`);
    process.exit(1);
  },
);
