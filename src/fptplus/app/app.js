// fptplus app: the page's behaviour. Every string that comes from the run, the dataset or an upload (file and
// class names, error messages) reaches the page as text (textContent / attribute values), never as markup.
'use strict';
let INFO = null, CURRENT = null, RESULTS = [];
const $ = id => document.getElementById(id);

// el('td', {className: 'x'}, 'text', child, ...): an element whose children are text nodes or elements
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function showError(msg) { const e = $('error'); e.textContent = msg; e.style.display = msg ? 'block' : 'none'; }
async function api(url, opts) {
  const r = await fetch(url, opts);
  let body;
  try { body = await r.json(); } catch (e) { throw new Error('the server answered ' + r.status + ' ' + r.statusText); }
  if (!r.ok || body.error) { throw new Error(body.error || ('HTTP ' + r.status)); }
  return body;
}
function pct(v) { return (100 * v).toFixed(1) + ' %'; }
function probs(p) {
  return Object.entries(p).map(([c, v]) => {
    const bar = el('div', {className: 'bar'});
    bar.style.width = Math.max(1, 100 * v) + '%';
    return el('div', {className: 'small'}, c + ' ' + pct(v), bar);
  });
}
function fillSelect(sel, opts) { sel.replaceChildren(...opts.map(([v, t]) => el('option', {value: String(v)}, t))); }
function prediction(text, id) { return el('span', {className: 'prediction', ...(id ? {id} : {})}, text || '(none ≥ 0.5)'); }

async function init() {
  try { INFO = await api('/api/info'); } catch (e) { showError('cannot load the run: ' + e.message); return; }
  const t = INFO.test || {};
  $('runinfo').textContent = `${INFO.method} · ${INFO.classes.join(' / ')}` +
    (t.auc != null ? ` · test AUC ${(100 * t.auc).toFixed(2)}` : '') +
    (INFO.threshold != null ? ` · threshold ${INFO.threshold.toFixed(3)} (from validation)` : '') + ` · ${INFO.run}`;
  $('limit').textContent = `uploads up to ${(INFO.max_upload / 1048576).toFixed(0)} MiB; nothing is written to disk`;
  if (INFO.explains) {
    fillSelect($('layer'), INFO.layers.map(l => [l, 'block ' + l])); $('layer').value = INFO.layers[INFO.layers.length - 1];
    fillSelect($('head'), [['all', 'all heads'], ...[...Array(INFO.heads).keys()].map(h => [h, 'head ' + h])]);
    fillSelect($('prompt'), [['mean', 'mean of prompts'], ...[...Array(INFO.prompts).keys()].map(p => [p, 'prompt ' + p])]);
  } else { $('selectors').textContent = INFO.method + ' runs have no selected tokens to show: probabilities only'; }
  fillSelect($('split-name'), INFO.splits.map(s => [s, s]));
  $('plots').replaceChildren(...INFO.plots.map(p => el('img', {src: '/api/plot/' + encodeURIComponent(p), alt: p, title: p})));
  if (INFO.splits.length) loadSplit();
}
function show(res, title) {
  CURRENT = res; $('viewer-title').textContent = title || res.name;
  const parts = ['prediction: ', prediction(res.prediction, 'viewer-prediction')];
  if (res.label != null) parts.push(' · true: ', el('b', {}, res.label));
  $('viewer-pred').replaceChildren(...parts, ...probs(res.probabilities));
  const ex = res.explain;
  if (ex) {
    $('image').src = ex.image; $('tokens').src = ex.tokens; $('attention').src = ex.attention;
    $('viewer-info').textContent = `block ${ex.layer}, ${ex.head == null ? 'all heads' : 'head ' + ex.head}, ` +
      `${ex.prompt == null ? 'mean of prompts' : 'prompt ' + ex.prompt}; ${ex.selected_per_head} tokens per head; ` +
      `prompt attention on CLS ${pct(ex.prompt_attention_on_prefix)}`;
  } else { $('image').src = res.image || ''; $('tokens').removeAttribute('src'); $('attention').removeAttribute('src'); }
}
async function rerender() {
  if (!CURRENT || !INFO.explains) return; showError('');
  const q = new URLSearchParams({id: CURRENT.id, layer: $('layer').value, head: $('head').value, prompt: $('prompt').value});
  try { CURRENT.explain = await api('/api/explain?' + q); show(CURRENT, $('viewer-title').textContent); } catch (e) { showError(e.message); }
}
['layer', 'head', 'prompt'].forEach(id => $(id).addEventListener('change', rerender));
async function upload(files) {
  showError('');
  for (const f of files) {
    const row = el('div', {className: 'result'}, f.name + ' …'); $('results').prepend(row);
    if (f.size > INFO.max_upload) {
      const mb = (f.size / 1048576).toFixed(1), limit = (INFO.max_upload / 1048576).toFixed(0);
      row.replaceChildren(el('span', {className: 'err'}, `${f.name}: ${mb} MiB is above the ${limit} MiB limit`));
      showError(`${f.name} is too large`); continue;
    }
    try {
      const res = await api('/api/predict?name=' + encodeURIComponent(f.name), {method: 'POST', body: f});
      RESULTS.push(res); $('download').disabled = false;
      row.replaceChildren(f.name + ': ', prediction(res.prediction), ...probs(res.probabilities));
      row.onclick = () => { show(res); rerenderIfNeeded(); };
      show(res); rerenderIfNeeded();
    } catch (e) { row.replaceChildren(el('span', {className: 'err'}, `${f.name}: ${e.message}`)); showError(e.message); }
  }
}
function rerenderIfNeeded() {
  if (INFO.explains && ($('head').value !== 'all' || $('prompt').value !== 'mean' ||
      $('layer').value != String(INFO.layers[INFO.layers.length - 1]))) rerender();
}
$('files').addEventListener('change', e => { const f = [...e.target.files]; e.target.value = ''; upload(f); });
const drop = $('drop');
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over'); upload([...e.dataTransfer.files]); });
$('download').addEventListener('click', () => {
  // a cell starting with = + - @ is prefixed with ' so that a spreadsheet reads it as text, not a formula
  const cls = INFO.classes, q = s => { s = String(s); if (/^[=+\-@\t\r]/.test(s)) s = "'" + s; return '"' + s.replace(/"/g, '""') + '"'; };
  const lines = [['path', 'prediction', ...cls.map(c => q('prob_' + c))].join(',')]
    .concat(RESULTS.map(r => [q(r.name), q(r.prediction), ...cls.map(c => r.probabilities[c])].join(',')));
  const a = el('a', {href: URL.createObjectURL(new Blob([lines.join('\n') + '\n'], {type: 'text/csv'})), download: 'predictions.csv'});
  a.click();
});
async function loadSplit() {
  showError('');
  try {
    const q = new URLSearchParams({name: $('split-name').value, show: $('split-show').value});
    const s = await api('/api/split?' + q);
    $('split-count').textContent = `${s.rows.length} of ${s.total} ${s.split} images`;
    $('split-table').replaceChildren(...s.rows.map(r => {
      const tr = el('tr', {className: 'split-row'}, el('td', {}, r.path), el('td', {}, r.label), el('td', {}, r.prediction),
        el('td', {}, pct(r.confidence)));
      tr.onclick = async () => {
        showError('');
        try {
          const res = await api('/api/sample?' + new URLSearchParams({split: s.split, path: r.path}));
          show(res, `${s.split}: ${r.path}`); rerenderIfNeeded();
        } catch (e) { showError(e.message); }
      };
      return tr;
    }));
  } catch (e) { showError(e.message); }
}
$('split-name').addEventListener('change', loadSplit); $('split-show').addEventListener('change', loadSplit);
init();
