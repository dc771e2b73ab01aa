// SadTalker tab: send-to switch, progress bar hooks. Loaded into <head> by the WebUI (A1111 1.6-1.10, Forge).
// Uses host globals from script.js/ui.js/progressbar.js: gradioApp, randomId, requestProgress.

function sadtalker_tab_button() {
    // Find the tab button by its text, never by index (Forge and other extensions shift the indices).
    var app = gradioApp();
    var buttons = app.querySelectorAll('#tabs > .tab-nav > button, #tabs > div > .tab-nav > button, #tabs .tab-nav button');
    for (var i = 0; i < buttons.length; i++) {
        if (buttons[i].textContent.trim() === 'SadTalker') {
            return buttons[i];
        }
    }
    return null;
}

// Called by the host's send-to wiring (`_js: switch_to_sadtalker`) after the image was put in our picture input.
function switch_to_sadtalker() {
    var button = sadtalker_tab_button();
    if (button) {
        button.click();
    }
    return Array.from(arguments);
}

function sadtalker_start_progress(panelId, previewId) {
    var id = typeof randomId === 'function' ? randomId() : 'task(' + Math.random().toString(36).slice(2) + ')';
    if (typeof requestProgress === 'function') {
        var app = gradioApp();
        var panel = app.getElementById(panelId);
        var preview = previewId ? app.getElementById(previewId) : null;
        if (panel && panel.parentNode) {
            requestProgress(id, panel, preview, function() {});
        }
    }
    return id;
}

// Upload names. gradio hands uploads to Python under temporary names (3.41: tmpcan1rlob.png for the picture,
// speech-0-100.wav for the recording; 4.x: the picture as an image without a name), so the name the user
// knows only exists here: remember the file picked or dropped on an input, keep it once that file became the
// input's value (the input's upload event), and send the names of the values still shown with Generate.
var SADTALKER_NAMED_INPUTS = ['sadtalker_picture', 'sadtalker_audio', 'sadtalker_ref_video'];
var sadtalker_picked = {}; // elem_id -> name of the file picked or dropped, until the input has loaded it
var sadtalker_uploads = {}; // elem_id -> {name, value}: the upload that became the input's value

function sadtalker_named_input(event) {
    var path = event.composedPath ? event.composedPath() : [event.target];
    for (var i = 0; i < path.length; i++) {
        if (path[i] && path[i].id && SADTALKER_NAMED_INPUTS.indexOf(path[i].id) >= 0) {
            return path[i].id;
        }
    }
    return null;
}

function sadtalker_note_pick(event, files) {
    var id = sadtalker_named_input(event);
    if (id && files && files.length) {
        sadtalker_picked[id] = files[0].name;
    }
}

function sadtalker_watch_picks(root) {
    root.addEventListener('change', function(e) {
        if (e.target && e.target.type === 'file') {
            sadtalker_note_pick(e, e.target.files);
        }
    }, true);
    root.addEventListener('drop', function(e) {
        sadtalker_note_pick(e, e.dataTransfer ? e.dataTransfer.files : null);
    }, true);
}
sadtalker_watch_picks(document);

// The inputs' upload event (browser only, wired in ui.py): the picked file is now the input's value.
function sadtalker_uploaded(id, value) {
    var name = sadtalker_picked[id];
    delete sadtalker_picked[id];
    sadtalker_uploads[id] = name ? {name: name, value: value} : null;
    return [];
}

function sadtalker_same_value(a, b) {
    if (a === b) {
        return a !== null && a !== undefined;
    }
    if (!a || !b || typeof a !== 'object' || typeof b !== 'object') {
        return false;
    }
    var keys = ['path', 'data', 'url', 'name']; // gradio 4 file data: path; gradio 3: data URL
    for (var i = 0; i < keys.length; i++) {
        if (a[keys[i]] !== undefined || b[keys[i]] !== undefined) {
            return a[keys[i]] === b[keys[i]];
        }
    }
    return false;
}

// JSON {elem_id: file name} for the uploads that are still the inputs' values (a picture sent from a gallery,
// pasted or edited since has no upload name: Python keeps its own).
function sadtalker_upload_names(values) {
    var names = {};
    SADTALKER_NAMED_INPUTS.forEach(function(id) {
        var upload = sadtalker_uploads[id];
        if (upload && values.some(function(v) {
            return sadtalker_same_value(upload.value, v);
        })) {
            names[id] = upload.name;
        }
    });
    return JSON.stringify(names);
}

// The hidden upload-names textbox always holds this value in the page (ui.py): its place among the arguments
// (gradio 3 also appends the outputs' values after the inputs) is where the names go.
var SADTALKER_NAMES_SLOT = 'sadtalker:upload-names';

// Generate: the first input is the hidden task-id textbox (wrap_gradio_gpu_call reads it); the upload-names
// textbox gets the names of the files the user chose.
function sadtalker_submit() {
    var res = Array.from(arguments);
    res[0] = sadtalker_start_progress('sadtalker_results_panel', 'sadtalker_video');
    var slot = res.indexOf(SADTALKER_NAMES_SLOT, 1);
    if (slot > 0) {
        res[slot] = sadtalker_upload_names(res.slice(1, slot));
    }
    if (typeof sadtalker_live_submit === 'function') { // sadtalker_player.js: "Play while generating"
        res = sadtalker_live_submit(res, 'sadtalker_live', 'sadtalker_video');
    }
    return res;
}

function sadtalker_submit_batch() {
    var res = Array.from(arguments);
    res[0] = sadtalker_start_progress('sadtalker_batch_panel', null);
    return res;
}

function sadtalker_submit_download() {
    var res = Array.from(arguments);
    res[0] = sadtalker_start_progress('sadtalker_download_panel', null);
    return res;
}

// Fallback for hosts where the Python send-to binding did not create our button (a different image-button
// row, a failed paste-fields registration): add a 🎤 button to each gallery's button row that uploads the
// shown image into the SadTalker picture input through its file <input> and switches to the tab.
var SADTALKER_SEND_SOURCES = ['txt2img', 'img2img', 'extras'];

function sadtalker_add_fallback_buttons() {
    var app = gradioApp();
    SADTALKER_SEND_SOURCES.forEach(function(tab) {
        if (app.getElementById(tab + '_send_to_sadtalker') || app.getElementById(tab + '_send_to_sadtalker_js')) {
            return; // the Python-wired button exists
        }
        var row = app.getElementById('image_buttons_' + tab);
        if (!row || !app.getElementById(tab + '_gallery')) {
            return;
        }
        var sample = row.querySelector('button');
        var button = document.createElement('button');
        button.id = tab + '_send_to_sadtalker_js';
        button.className = sample ? sample.className : 'lg secondary gradio-button tool';
        button.textContent = '\uD83C\uDFA4';
        button.title = 'Send image to SadTalker';
        button.addEventListener('click', function() {
            sadtalker_send_from_gallery(tab);
        });
        row.appendChild(button);
    });
}

function sadtalker_gallery_image(tab) {
    var gallery = gradioApp().getElementById(tab + '_gallery');
    if (!gallery) {
        return null;
    }
    return gallery.querySelector('.thumbnail-item.selected img') ||
        gallery.querySelector('.preview img') ||
        gallery.querySelector('img');
}

async function sadtalker_file_input() {
    var picture = gradioApp().getElementById('sadtalker_picture');
    if (!picture) {
        return null;
    }
    var input = picture.querySelector('input[type=file]');
    if (!input) { // an image is already there: clear it so that the upload input comes back
        var clear = picture.querySelector('button[aria-label="Clear"], button[title="Clear"]');
        if (clear) {
            clear.click();
            await new Promise(function(resolve) {
                setTimeout(resolve, 200);
            });
            input = picture.querySelector('input[type=file]');
        }
    }
    return input;
}

async function sadtalker_send_from_gallery(tab) {
    var img = sadtalker_gallery_image(tab);
    if (!img || !img.src) {
        return false;
    }
    var blob = await (await fetch(img.src)).blob();
    var file = new File([blob], 'sent-from-' + tab + '.png', {type: blob.type || 'image/png'});
    switch_to_sadtalker();
    var input = await sadtalker_file_input();
    if (!input) {
        return false;
    }
    var transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
    return true;
}

if (typeof onUiLoaded === 'function') {
    onUiLoaded(sadtalker_add_fallback_buttons);
    onUiLoaded(function() {
        var app = gradioApp();
        if (app !== document && app instanceof ShadowRoot) { // change events do not leave a shadow root
            sadtalker_watch_picks(app);
        }
    });
}
