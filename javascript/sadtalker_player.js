// SadTalker "Play while generating": plays the fragmented MP4 of a video while it is being made, with Media
// Source Extensions. Loaded by the WebUI (every file in javascript/) and by the standalone app (its page loads
// this file from GET sadtalker/v1/player.js). Needs no host globals.
//
// With the box ticked, Generate makes a random token (sadtalker_live_submit) and sends it with the job; the
// server streams that job's fragments under the token only: GET sadtalker/v1/stream/<token> replays what was
// written so far, then follows live until the job ends. A player <video> is put into the holder element
// (an empty gr.HTML beside the result) and plays from the first fragment on, while the job goes on; when the
// job's normal result is shown in the result component, playback moves there at the same time and the
// player goes away. Without MediaSource (or without the codec) nothing is streamed: the page works as before.

var SADTALKER_STREAM_SLOT = 'sadtalker:stream-token';
var SADTALKER_PROBE_TYPE = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"';
var SADTALKER_ATTACH_WAIT_MS = 60000; // a job not registered by then (a 404 until then) is not streamed
var sadtalker_live = null; // the player of the latest Generate

function sadtalker_live_supported() {
    return typeof window.MediaSource === 'function' && MediaSource.isTypeSupported(SADTALKER_PROBE_TYPE);
}

function sadtalker_new_token() {
    var bytes = new Uint8Array(24); // 192 bits
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, function(b) {
        return ('0' + b.toString(16)).slice(-2);
    }).join('');
}

function sadtalker_root() {
    return typeof gradioApp === 'function' ? gradioApp() : document;
}

function sadtalker_by_id(id) {
    var root = sadtalker_root();
    return (root.getElementById ? root.getElementById(id) : root.querySelector('#' + id)) ||
        document.getElementById(id);
}

// ---- the codec string from the init segment (ISO BMFF boxes: 32-bit size, 4-char type)

function sadtalker_box_type(bytes, at) {
    return String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
}

function sadtalker_box_size(bytes, at) {
    return ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];
}

// Offset after the top-level moov once it is complete in `bytes`, else -1.
function sadtalker_init_end(bytes) {
    var at = 0;
    while (at + 8 <= bytes.length) {
        var size = sadtalker_box_size(bytes, at);
        if (size < 8 || at + size > bytes.length) {
            return -1;
        }
        if (sadtalker_box_type(bytes, at) === 'moov') {
            return at + size;
        }
        at += size;
    }
    return -1;
}

function sadtalker_find(bytes, type, from, to) {
    for (var i = from; i + 4 <= to; i++) {
        if (bytes[i] === type.charCodeAt(0) && bytes[i + 1] === type.charCodeAt(1) &&
            bytes[i + 2] === type.charCodeAt(2) && bytes[i + 3] === type.charCodeAt(3)) {
            return i;
        }
    }
    return -1;
}

function sadtalker_hex(b) {
    return ('0' + b.toString(16)).slice(-2).toUpperCase();
}

// 'video/mp4; codecs="avc1.PPCCLL[, mp4a.40.N]"' for the moov in bytes[0:end], or null without an avcC box.
function sadtalker_mime(bytes, end) {
    var avcc = sadtalker_find(bytes, 'avcC', 0, end);
    if (avcc < 0 || avcc + 8 > end) {
        return null;
    }
    // avcC body: configurationVersion, AVCProfileIndication, profile_compatibility, AVCLevelIndication
    var codecs = ['avc1.' + sadtalker_hex(bytes[avcc + 5]) + sadtalker_hex(bytes[avcc + 6]) +
        sadtalker_hex(bytes[avcc + 7])];
    if (sadtalker_find(bytes, 'mp4a', 0, end) >= 0) {
        codecs.push('mp4a.40.' + sadtalker_audio_object_type(bytes, end));
    }
    return 'video/mp4; codecs="' + codecs.join(', ') + '"';
}

// AAC audio object type from the esds DecoderSpecificInfo (tag 5); 2 (AAC LC) when it cannot be read.
function sadtalker_audio_object_type(bytes, end) {
    var esds = sadtalker_find(bytes, 'esds', 0, end);
    if (esds < 0) {
        return 2;
    }
    for (var i = esds + 8; i + 2 < end; i++) {
        if (bytes[i] !== 0x05) {
            continue;
        }
        var j = i + 1;
        var length = 0;
        for (var k = 0; k < 4 && j < end; k++, j++) { // expandable size: 7 bits per byte
            length = (length << 7) | (bytes[j] & 0x7f);
            if (!(bytes[j] & 0x80)) {
                j++;
                break;
            }
        }
        if (length >= 2 && j < end) {
            var type = bytes[j] >> 3;
            return type > 0 && type < 31 ? type : 2;
        }
    }
    return 2;
}

// ---- the player

function SadtalkerLivePlayer(token, holderId, resultId) {
    this.token = token;
    this.holderId = holderId;
    this.resultId = resultId;
    this.stopped = false;
    this.streamEnded = false;
    this.queue = [];
    this.received = 0;
    this.startedPlaying = false;
    this.failure = null;
    this.resultBefore = this.resultSrc();
    this.video = document.createElement('video');
    this.video.className = 'sadtalker-live-video';
    this.video.controls = true;
    this.video.playsInline = true;
    this.video.setAttribute('data-token-tail', token.slice(-6));
    this.mediaSource = new MediaSource();
    this.video.src = URL.createObjectURL(this.mediaSource);
    this.box = document.createElement('div');
    this.box.className = 'sadtalker-live';
    var label = document.createElement('div');
    label.className = 'sadtalker-live-label';
    label.textContent = 'Playing while generating';
    this.box.appendChild(label);
    this.box.appendChild(this.video);
    var holder = sadtalker_by_id(holderId);
    if (holder) {
        holder.appendChild(this.box);
    }
    var self = this;
    this.mediaSource.addEventListener('sourceopen', function() {
        self.attach(Date.now());
    }, {once: true});
}

SadtalkerLivePlayer.prototype.url = function() {
    return 'sadtalker/v1/stream/' + encodeURIComponent(this.token);
};

SadtalkerLivePlayer.prototype.resultSrc = function() {
    var result = sadtalker_by_id(this.resultId);
    var video = result ? result.querySelector('video') : null;
    return video ? (video.currentSrc || video.src || '') : '';
};

// GET the stream; 404 while the job has not reached the server yet (the request waits in the queue).
SadtalkerLivePlayer.prototype.attach = async function(since) {
    while (!this.stopped) {
        var response;
        try {
            response = await fetch(this.url(), {cache: 'no-store'});
        } catch (e) {
            return this.fail('stream request failed: ' + e);
        }
        if (response.ok && response.body) {
            return this.read(response.body.getReader());
        }
        if (response.status !== 404 || Date.now() - since > SADTALKER_ATTACH_WAIT_MS) {
            return this.fail('stream answered ' + response.status);
        }
        await new Promise(function(resolve) {
            setTimeout(resolve, 400);
        });
    }
};

SadtalkerLivePlayer.prototype.read = async function(reader) {
    var head = new Uint8Array(0);
    var sourceBuffer = null;
    for (;;) {
        var part;
        try {
            part = await reader.read();
        } catch (e) {
            return this.fail('stream broken: ' + e);
        }
        if (this.stopped) {
            reader.cancel();
            return;
        }
        if (part.done) {
            break;
        }
        this.received += part.value.length;
        if (sourceBuffer) {
            this.push(part.value);
            continue;
        }
        var joined = new Uint8Array(head.length + part.value.length);
        joined.set(head);
        joined.set(part.value, head.length);
        head = joined;
        var end = sadtalker_init_end(head);
        if (end < 0) {
            continue;
        }
        var mime = sadtalker_mime(head, end);
        if (!mime || !MediaSource.isTypeSupported(mime)) {
            reader.cancel();
            return this.fail('this browser cannot play ' + mime);
        }
        this.mime = mime;
        sourceBuffer = this.mediaSource.addSourceBuffer(mime);
        sourceBuffer.mode = 'segments';
        this.sourceBuffer = sourceBuffer;
        var self = this;
        sourceBuffer.addEventListener('updateend', function() {
            self.pump();
        });
        this.push(head);
    }
    if (!sourceBuffer) { // the job ended before its first second of video (an error, Stop, Interrupt)
        return this.fail('the stream ended before the first fragment');
    }
    this.streamEnded = true;
    this.pump();
};

SadtalkerLivePlayer.prototype.push = function(bytes) {
    this.queue.push(bytes);
    this.pump();
};

// Append the next queued chunk when the buffer is idle; start playing once media is buffered; end the
// media stream after the last chunk.
SadtalkerLivePlayer.prototype.pump = function() {
    var sb = this.sourceBuffer;
    if (this.stopped || !sb || sb.updating || this.mediaSource.readyState !== 'open') {
        return;
    }
    if (this.queue.length) {
        try {
            sb.appendBuffer(this.queue.shift());
        } catch (e) {
            this.fail('append failed: ' + e);
        }
        return;
    }
    if (!this.startedPlaying && sb.buffered.length) {
        this.startedPlaying = true;
        if (this.video.currentTime < sb.buffered.start(0)) {
            this.video.currentTime = sb.buffered.start(0);
        }
        this.play();
    }
    if (this.streamEnded) {
        try {
            this.mediaSource.endOfStream();
        } catch (e) {
            // already ended
        }
    }
};

SadtalkerLivePlayer.prototype.play = function() {
    var video = this.video;
    var attempt = video.play();
    if (attempt && attempt.catch) {
        attempt.catch(function() { // no sound without a user gesture: play muted (the controls unmute)
            video.muted = true;
            video.play().catch(function() {});
        });
    }
};

SadtalkerLivePlayer.prototype.fail = function(why) {
    this.failure = why;
    if (window.console) {
        console.warn('SadTalker live player: ' + why);
    }
    if (!this.startedPlaying) {
        this.remove();
    }
};

SadtalkerLivePlayer.prototype.remove = function() {
    this.stopped = true;
    try {
        this.video.pause();
    } catch (e) {
        // nothing to pause
    }
    if (this.box.parentNode) {
        this.box.parentNode.removeChild(this.box);
    }
    URL.revokeObjectURL(this.video.src);
};

// The job has ended (the Generate event is done): once the result component shows the new video, continue
// there from where the player is (if it is playing) and remove the player; no new video: just remove it.
SadtalkerLivePlayer.prototype.finish = function(hasResult) {
    var self = this;
    var tries = 0;
    var timer = setInterval(function() {
        tries++;
        var src = self.resultSrc();
        var changed = src && src !== self.resultBefore;
        if (!changed && hasResult && tries < 50) {
            return; // the result component has not rendered the new video yet
        }
        clearInterval(timer);
        var result = sadtalker_by_id(self.resultId);
        var video = changed && result ? result.querySelector('video') : null;
        if (video && !self.video.paused && !self.video.ended) {
            var at = self.video.currentTime;
            var muted = self.video.muted;
            var resume = function() {
                video.currentTime = at;
                video.muted = muted;
                var attempt = video.play();
                if (attempt && attempt.catch) {
                    attempt.catch(function() {});
                }
            };
            if (video.readyState >= 1) {
                resume();
            } else {
                video.addEventListener('loadedmetadata', resume, {once: true});
            }
        }
        self.remove();
    }, 100);
};

function sadtalker_live_start(token, holderId, resultId) {
    if (sadtalker_live) {
        sadtalker_live.remove();
    }
    sadtalker_live = new SadtalkerLivePlayer(token, holderId, resultId);
    return sadtalker_live;
}

// For a Generate click's js function: `args` are its input values, with the "Play while generating" box's
// value right before the stream slot (the hidden textbox holding SADTALKER_STREAM_SLOT); the slot gets a new
// token and the player starts, or '' (no streaming) when the box is off or the browser cannot play it.
function sadtalker_live_submit(args, holderId, resultId) {
    var slot = args.indexOf(SADTALKER_STREAM_SLOT);
    if (slot < 1) {
        return args;
    }
    args[slot] = '';
    if (sadtalker_live) {
        sadtalker_live.remove();
        sadtalker_live = null;
    }
    if (args[slot - 1] === true && sadtalker_live_supported()) {
        args[slot] = sadtalker_new_token();
        sadtalker_live_start(args[slot], holderId, resultId);
    }
    return args;
}

// After the Generate event (a .then of it): `video` is the result component's value (empty: no video).
function sadtalker_live_done(video) {
    if (sadtalker_live) {
        var player = sadtalker_live;
        sadtalker_live = null;
        player.finish(!!video);
    }
    return [];
}

// The standalone app's Generate (the app's page has no other script of ours).
function sadtalker_app_submit() {
    return sadtalker_live_submit(Array.from(arguments), 'sadtalker_app_live', 'sadtalker_app_video');
}
