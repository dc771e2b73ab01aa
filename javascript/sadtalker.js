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

// Generate: the first input is the hidden task-id textbox (wrap_gradio_gpu_call reads it).
function sadtalker_submit() {
    var res = Array.from(arguments);
    res[0] = sadtalker_start_progress('sadtalker_results_panel', 'sadtalker_video');
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
