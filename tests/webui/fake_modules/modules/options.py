"""``modules.options``: OptionInfo (1.6 signature + 1.7 category_id) and Options (opts.data)."""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, comment_before="", comment_after="", infotext=None,
                 restrict_api=False, category_id=None):  # fmt: skip
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.reload_ui = False
        self.restart = False

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.restart = True
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.reload_ui = True
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class Options:
    """Settings: ``opts.key`` reads ``data`` (or the registered default); unknown keys raise AttributeError."""

    def __init__(self, data_labels: dict | None = None):
        object.__setattr__(self, "data_labels", dict(data_labels or {}))
        object.__setattr__(self, "data", {k: v.default for k, v in self.data_labels.items()})

    def __getattr__(self, item):
        data = object.__getattribute__(self, "data")
        labels = object.__getattribute__(self, "data_labels")
        if item in data:
            return data[item]
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        if key in self.data_labels or key in self.data:
            self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def set(self, key, value, is_api=False, run_callbacks=True):
        if key not in self.data_labels:
            return False
        if is_api and self.data_labels[key].restrict_api:
            return False  # /sdapi/v1/options cannot change it
        self.data[key] = value
        return True


class OptionsCategory:
    def __init__(self, id, label):
        self.id = id
        self.label = label


class OptionsCategories:
    def __init__(self):
        self.mapping = {}

    def register_category(self, category_id, label):
        self.mapping.setdefault(category_id, OptionsCategory(category_id, label))
        return category_id


categories = OptionsCategories()


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict
