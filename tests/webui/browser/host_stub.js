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

function extract_image_from_gallery(gallery) {
    if (gallery.length == 0) {
        return [null];
    }
    if (gallery.length == 1) {
        return [gallery[0]];
    }
    var index = selected_gallery_index();
    if (index < 0 || index >= gallery.length) {
        index = 0;
    }
    return [gallery[index]];
}

function randomId() {
    return "task(" + Math.random().toString(36).slice(2, 7) + Math.random().toString(36).slice(2, 7) + ")";
}

window.sadtalkerProgressRequests = [];
function requestProgress(id_task, progressbarContainer, gallery, atEnd) {
    window.sadtalkerProgressRequests.push(id_task);
}
