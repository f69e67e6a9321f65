// The desktop page: asks for a fresh connect tag (POST /web/connect with the page's CSRF
// token), opens the WebSocket that redeems it and hands it to noVNC, and reconnects with a
// new tag after a network drop (the socket closed without a close frame: 1006) while the
// web session lasts. A session the service ended (close code 4000: opened elsewhere, or
// the access rules changed) or the desktop ended (1000) is not reconnected.
import RFB from './novnc/core/rfb.js';

const screen = document.getElementById('screen');
const statusEl = document.getElementById('status');
const clip = document.getElementById('clipboard');
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const maxRetries = 5;
const closeEnded = 4000; // web.CloseEnded
let rfb = null;
let retries = 0;
let leaving = false;

function status(text, state) {
  statusEl.textContent = text;
  document.body.dataset.state = state;
}

async function connect() {
  status('Connecting…', 'connecting');
  let resp, body;
  try {
    resp = await fetch('/web/connect', { method: 'POST', headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' });
    body = await resp.json();
  } catch (e) {
    return retry('The connection to the service was lost.');
  }
  if (!resp.ok) {
    if (body.login) { location.assign('/web/'); return; }
    status(body.message, 'refused');
    if (body.retry) setTimeout(connect, 5000);
    return;
  }
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + body.path;
  const sock = new WebSocket(url, ['binary']);
  let closeCode = 0;
  sock.addEventListener('close', (e) => { closeCode = e.code; });
  rfb = new RFB(screen, sock);
  rfb.scaleViewport = true;       // the desktop fits the window, and follows its size
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    retries = 0;
    status('Connected to ' + body.workspaceId, 'connected');
    rfb.focus();
  });
  rfb.addEventListener('disconnect', () => {
    rfb = null;
    if (leaving) return;
    if (closeCode === closeEnded) {
      status('Your session was ended: the WorkSpace was opened elsewhere, or your access changed.', 'ended');
      return;
    }
    if (closeCode === 1000) {
      status('Disconnected.', 'disconnected');
      return;
    }
    retry('The connection was lost.');
  });
  rfb.addEventListener('clipboard', (e) => { clip.value = e.detail.text; });
}

function retry(why) {
  if (retries >= maxRetries) {
    status(why + ' Reload the page to try again.', 'disconnected');
    return;
  }
  retries++;
  status(why + ' Reconnecting…', 'reconnecting');
  setTimeout(connect, 1000 * retries);
}

document.getElementById('clipboard-send').addEventListener('click', () => {
  if (rfb) { rfb.clipboardPasteFrom(clip.value); rfb.focus(); }
});
document.getElementById('fullscreen').addEventListener('click', () => {
  if (screen.requestFullscreen) screen.requestFullscreen();
});
const logout = document.getElementById('logout');
if (logout) logout.addEventListener('click', () => { leaving = true; if (rfb) rfb.disconnect(); });
window.addEventListener('pagehide', () => { leaving = true; });

connect();
