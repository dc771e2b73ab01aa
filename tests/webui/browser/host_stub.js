// TEST ONLY: the few host globals (A1111 script.js / ui.js / progressbar.js) that send-to and the
// SadTalker tab rely on, written from their documented behaviour (shared/docs/a1111-api.md).
function gradioApp() {
    const elems = document.getElementsByTagName('gradio-app');
    const elem = elems.length == 0 ? document : elems[0];
    if (elem !== document) {
        elem.getElementById = function(id) {
            return document.getElementById(id);
        };
    }
    return elem.shadowRoot ? elem.shadowRoot : elem;
}

function selected_gallery_index() {
    var buttons = gradioApp().querySelectorAll('div[id$=_gallery] .thumbnail-item.thumbnail-small');
    return Array.from(buttons).findIndex(elem => elem.classList.contains('selected'));
}

// A1111 (gradio 3) returns [item]; Forge (gradio 4) returns [[item]] (one input whose value is a gallery).
function extract_image_from_gallery(gallery) {
    var gradio4 = window.SADTALKER_TEST_GRADIO4 === true;
    if (gallery.length == 0) {
        return [null];
    }
    var index = gallery.length == 1 ? 0 : selected_gallery_index();
    if (index < 0 || index >= gallery.length) {
        index = 0;
    }
    return gradio4 ? [[gallery[index]]] : [gallery[index]];
}

function randomId() {
    return "task(" + Math.random().toString(36).slice(2, 7) + Math.random().toString(36).slice(2, 7) + ")";
}

window.sadtalkerProgressRequests = [];
function requestProgress(id_task, progressbarContainer, gallery, atEnd) {
    window.sadtalkerProgressRequests.push(id_task);
}

// ui.js: callbacks run once the UI exists (the host uses a MutationObserver on gradio-app).
var uiLoadedCallbacks = [];
function onUiLoaded(callback) {
    uiLoadedCallbacks.push(callback);
}
(function waitForUi() {
    if (document.readyState !== 'loading' && gradioApp().querySelector('#tabs')) {
        uiLoadedCallbacks.forEach(function(cb) {
            cb();
        });
        return;
    }
    setTimeout(waitForUi, 100);
})();
