/* petbind report viewer: NiiVue on volumes embedded in the page (base64 NIfTI).
 * No network: volumes come from the JSON block #petbind-volumes and are read
 * with NVImage.loadFromBase64 (browsers block fetch() of file:// URLs).
 * Every map is drawn over its tracer's underlay (the anatomy: mean T1w, else
 * mean BP_ND) in grey. t maps are shown where |t| exceeds the threshold
 * (positive values in the first colour map of the pair, negative in the
 * second); % change maps from +-5 % of their limit to the limit (the report's
 * robust limit, see report/voxel_display.py); BP_ND maps (mean per condition)
 * from 5 % of their 99th percentile to it. The colour bar's quantity and range
 * are written under the canvas (#viewer-colorbar-label). The outlines of the
 * tracer's target regions (kind "outline", a label volume from the study's
 * atlas on the statistics grid) are drawn over every map of that tracer while
 * #viewer-outlines is checked.
 * Sets window.petbindViewer = "ready" | "failed: <reason>" for tests and users,
 * and window.petbindViewerState = {kind, layers (underlay and map), underlay, calMin,
 * calMax, label, outlines: {shown, regions}}. */
(function () {
  "use strict";
  // fit QC table: a scan link opens the scan's (collapsed) fit panel
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a.open-scan");
    if (!a) { return; }
    var d = document.querySelector(a.getAttribute("href"));
    if (d && d.tagName === "DETAILS") { d.open = true; }
  });
  var status = document.getElementById("viewer-status");
  function done(state) {
    window.petbindViewer = state;
    if (status) {
      status.textContent = state === "ready" ? "" :
        "Interactive viewer unavailable (" + state + "); the static figures above show the same maps.";
    }
  }
  var block = document.getElementById("petbind-volumes");
  if (!block) { done("failed: no volumes"); return; }
  if (typeof niivue === "undefined") { done("failed: viewer library missing"); return; }
  var vols = JSON.parse(block.textContent);
  var effects = document.getElementById("petbind-effect-volumes");
  if (effects) { vols = vols.concat(JSON.parse(effects.getAttribute("data-volumes"))); }
  var outlineBlock = document.getElementById("petbind-outline-volumes");
  if (outlineBlock) { vols = vols.concat(JSON.parse(outlineBlock.getAttribute("data-volumes"))); }
  var canvas = document.getElementById("viewer-canvas");
  var pick = document.getElementById("viewer-volume");
  var thr = document.getElementById("viewer-threshold");
  var thrOut = document.getElementById("viewer-threshold-value");
  var cmap = document.getElementById("viewer-colormap");
  var layout = document.getElementById("viewer-layout");
  var cbLabel = document.getElementById("viewer-colorbar-label");
  var outlinesBox = document.getElementById("viewer-outlines");
  var nv = new niivue.Niivue({
    isColorbar: true, show3Dcrosshair: false, backColor: [0, 0, 0, 1],
    crosshairColor: [0.1, 0.9, 0.1, 0.7], crosshairWidth: 0.25, crosshairWidthUnit: "mm",
    multiplanarShowRender: niivue.SHOW_RENDER.NEVER
  });
  var OUTLINE_OPACITY = 0.6;  // the map stays visible under the outlines of small regions
  var current = -1;
  var mapLayer = 0;     // index in nv.volumes of the map being shown
  var outlineLayer = -1;  // index in nv.volumes of the region outlines, -1 when not drawn
  function kindFor(i, kind) {
    for (var j = 0; j < vols.length; j++) {
      if (vols[j].kind === kind && vols[j].tracer === vols[i].tracer) { return j; }
    }
    return -1;
  }
  function underlayFor(i) { return kindFor(i, "underlay"); }
  function load(i) {
    return niivue.NVImage.loadFromBase64({ base64: vols[i].b64, name: "volume" + i + ".nii.gz" });
  }
  function restyle() {
    var t = parseFloat(thr.value);
    thrOut.textContent = t.toFixed(1);
    var pair = cmap.value.split("|");
    var n = nv.volumes.length;
    if (!n || current < 0) { return; }
    var top = nv.volumes[mapLayer];
    var kind = vols[current].kind;
    var label;
    if (mapLayer > 0) { nv.volumes[0].colormap = "gray"; nv.volumes[0].colorbarVisible = false; }
    var outlined = null;
    if (outlineLayer >= 0) {
      var o = vols[kindFor(current, "outline")];
      var lay = nv.volumes[outlineLayer];
      var lut = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
      o.regions.forEach(function (r, k) {
        lut.R.push(o.colours[k][0]); lut.G.push(o.colours[k][1]); lut.B.push(o.colours[k][2]);
        lut.A.push(255); lut.I.push(k + 1); lut.labels.push(r);
      });
      lay.setColormapLabel(lut);
      lay.opacity = OUTLINE_OPACITY;
      lay.colorbarVisible = false;
      outlined = o.regions;
    }
    var under = mapLayer > 0;
    if (kind === "overlay") {
      top.colormap = pair[0];
      top.colormapNegative = pair[1] || pair[0];
      top.cal_min = t;
      top.cal_max = Math.max(vols[current].max, t + 0.1);
      top.cal_minNeg = NaN;
      top.cal_maxNeg = NaN;
      top.opacity = 1;
      label = "t statistic: |t| from " + t.toFixed(1) + " to " + top.cal_max.toFixed(1) +
        " (" + pair[0] + " positive, " + (pair[1] || pair[0]) + " negative)";
    } else if (kind === "effect") {
      top.colormap = pair[0];
      top.colormapNegative = pair[1] || pair[0];
      top.cal_max = vols[current].max;
      top.cal_min = 0.05 * top.cal_max;
      top.cal_minNeg = NaN;
      top.cal_maxNeg = NaN;
      top.opacity = 1;
      label = "% change of BP_ND: |%| from " + top.cal_min.toPrecision(2) + " to " +
        top.cal_max.toPrecision(3) + " (" + pair[0] + " increase, " + (pair[1] || pair[0]) +
        " decrease); blank where the baseline BP_ND is low";
    } else {
      // BP_ND maps: a colour map that is dark at 0, transparent below 5 % of the range
      top.colormap = { warm: "inferno", redyell: "hot" }[pair[0]] || pair[0];
      top.colormapNegative = "";
      top.cal_max = vols[current].max;
      top.cal_min = under ? 0.05 * top.cal_max : 0;
      top.opacity = under ? 0.85 : 1;
      label = "BP_ND: from " + top.cal_min.toFixed(2) + " to " + top.cal_max.toFixed(2) +
        " (colour map " + top.colormap + ")";
    }
    top.colorbarVisible = true;
    if (cbLabel) {
      cbLabel.textContent = "Colour bar: " + label + (under ? "; grey: anatomy" : "") +
        (outlined ? "; coloured outlines: " + outlined.join(", ") + "." : ".");
    }
    window.petbindViewerState = {
      kind: kind, layers: mapLayer + 1, underlay: under, calMin: top.cal_min, calMax: top.cal_max,
      label: label, outlines: { shown: outlined !== null, regions: outlined || [] }
    };
    nv.updateGLVolume();
  }
  async function show(i) {
    var layers = [];
    var u = underlayFor(i);
    if (u >= 0 && u !== i) { layers.push(await load(u)); }
    layers.push(await load(i));
    var m = layers.length - 1;
    var o = kindFor(i, "outline");
    if (o >= 0 && outlinesBox && outlinesBox.checked) { layers.push(await load(o)); }
    while (nv.volumes.length) { nv.removeVolume(nv.volumes[0]); }
    layers.forEach(function (l) { nv.addVolume(l); });
    current = i;
    mapLayer = m;
    outlineLayer = layers.length > m + 1 ? m + 1 : -1;
    restyle();
  }
  (async function () {
    await nv.attachToCanvas(canvas);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    pick.addEventListener("change", function () {
      show(parseInt(pick.value, 10)).catch(function (e) { done("failed: " + e); });
    });
    thr.addEventListener("input", restyle);
    cmap.addEventListener("change", restyle);
    if (outlinesBox) {
      outlinesBox.addEventListener("change", function () {
        show(current).catch(function (e) { done("failed: " + e); });
      });
    }
    layout.addEventListener("change", function () { nv.setSliceType(parseInt(layout.value, 10)); });
    document.getElementById("viewer-prev").addEventListener("click", function () { nv.moveCrosshairInVox(0, 0, -1); });
    document.getElementById("viewer-next").addEventListener("click", function () { nv.moveCrosshairInVox(0, 0, 1); });
    await show(parseInt(pick.value, 10));
    done("ready");
  })().catch(function (e) { done("failed: " + (e && e.message ? e.message : e)); });
})();
