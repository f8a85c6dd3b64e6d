// Event listeners for the console's clients (lime.js, feedme.js): on/off by event type, and an
// emit that keeps one throwing listener from stopping the others (its error is rethrown on its
// own, so it still reaches the console).

export class Listeners {
  constructor() {
    this._listeners = new Map();
  }

  /** Call `listener(value)` on each event of `type`; returns this, for chaining. */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return this;
  }

  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
    return this;
  }

  _emit(type, value) {
    for (const listener of this._listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
