# R arguments -> xband command-line options. Each run setting has one entry: its flag and how
# an R value becomes the option's text (with a check that names the argument and the fix).

option_spec <- function() {
  list(
    model_layout = opt("--model-layout", "choice", c("channels_last", "channels_first")),
    accept_mismatch = opt("--accept-mismatch", "flag"),
    trust_pickle = opt("--trust-pickle", "flag"),
    trust_graph = opt("--trust-graph", "flag"),
    x_key = opt("--x-key", "string"),
    y_key = opt("--y-key", "string"),
    data_layout = opt("--data-layout", "choice", c("channels_last", "channels_first")),
    sensor = opt("--sensor", "string"),
    bands = opt("--bands", "names"),
    band_groups = opt("--band-groups", "groups"),
    regions = opt("--regions", "regions"),
    classes = opt("--classes", "names"),
    nodata = opt("--nodata", "number"),
    skip_bad = opt("--skip-bad", "flag"),
    scale = opt("--scale", "number"),
    clip = opt("--clip", "pair"),
    norm_stats = opt("--norm-stats", "path"),
    methods = opt("--methods", "names"),
    target = opt("--target", "choice", c("true", "predicted", "all")),
    output_space = opt("--output-space", "choice", c("logits", "probabilities")),
    multi_label = opt("--multi-label", "flag"),
    baseline = opt("--baseline", "choice", c("data", "mean", "zero")),
    background_images = opt("--background-images", "whole"),
    max_images = opt("--max-images", "whole"),
    max_per_class = opt("--max-per-class", "whole"),
    all_images = opt("--all-images", "flag"),
    budget = opt("--budget", "budget"),
    examples_per_class = opt("--examples-per-class", "whole"),
    accept_low_accuracy = opt("--accept-low-accuracy", "flag"),
    overwrite = opt("--overwrite", "flag"),
    figures = opt("--no-figures", "flag_off"),
    seed = opt("--seed", "whole"),
    batch_size = opt("--batch-size", "whole"),
    device = opt("--device", "choice", c("cpu", "cuda")),
    untuned = opt("--untuned", "flag"),
    quiet = opt("--quiet", "flag"),
    verbose = opt("--verbose", "flag"),
    engine = opt("--engine", "choice", c("single", "ray")),
    ray_address = opt("--ray-address", "string"),
    workers = opt("--workers", "whole"),
    gpus_per_worker = opt("--gpus-per-worker", "number"),
    evaluate = opt("--evaluate", "flag"),
    checks = opt("--checks", "names"),
    eval_images = opt("--eval-images", "whole"),
    deletion_baselines = opt("--deletion-baselines", "names"),
    random_orders = opt("--random-orders", "whole"),
    cascade_stages = opt("--cascade-stages", "whole")
  )
}

opt <- function(flag, type, choices = NULL) list(flag = flag, type = type, choices = choices)

# The command-line words for the settings in `values` (a named list; NULL = xband's default).
cli_options <- function(values) {
  spec <- option_spec()
  unknown <- setdiff(names(values), c(names(spec), "method_options"))
  if (length(unknown)) stop("internal: no xband option for ", toString(unknown))
  words <- character()
  for (name in intersect(names(spec), names(values))) {
    words <- c(words, option_words(name, values[[name]], spec[[name]]))
  }
  c(words, method_option_words(values$method_options))
}

option_words <- function(name, value, spec) {
  if (is.null(value)) return(character())
  if (spec$type %in% c("flag", "flag_off")) {  # flag_off: the option is given for FALSE
    if (!is.logical(value) || length(value) != 1 || is.na(value)) {
      arg_error(name, "must be TRUE or FALSE", value)
    }
    return(if (value == (spec$type == "flag")) spec$flag else character())
  }
  text <- switch(spec$type,
    choice = choice_text(name, value, spec$choices),
    string = string_text(name, value),
    path = path.expand(string_text(name, value)),
    names = names_text(name, value),
    number = number_text(name, value),
    whole = whole_text(name, value),
    pair = pair_text(name, value),
    groups = groups_text(name, value),
    regions = regions_text(name, value),
    budget = budget_text(name, value),
    stop("internal: unknown option type ", spec$type)
  )
  c(spec$flag, text)
}

arg_error <- function(name, must, value) {
  shown <- paste(utils::capture.output(utils::str(value, give.head = FALSE)), collapse = " ")
  stop(sprintf("xband_explain: `%s` %s (got %s).", name, must, trimws(shown)), call. = FALSE)
}

string_text <- function(name, value) {
  if (!is.character(value) || length(value) != 1 || is.na(value) || !nzchar(value)) {
    arg_error(name, "must be one character string", value)
  }
  value
}

choice_text <- function(name, value, choices) {
  string_text(name, value)
  if (!value %in% choices) {
    arg_error(name, paste0("must be one of ", paste0("\"", choices, "\"", collapse = ", ")), value)
  }
  value
}

names_text <- function(name, value) {
  if (is.factor(value)) value <- levels(value)
  if (!is.character(value) || !length(value) || anyNA(value) || !all(nzchar(value))) {
    arg_error(name, "must be a character vector of names", value)
  }
  if (any(grepl(",", value, fixed = TRUE))) {
    stop(sprintf("xband_explain: `%s` holds a comma (%s); xband takes these names as a ",
                 name, toString(dQuote(value[grepl(",", value)], FALSE))),
         "comma-separated list, so rename it (e.g. replace ',' with ';' or ' -').", call. = FALSE)
  }
  paste(value, collapse = ",")
}

number_text <- function(name, value) {
  if (!is.numeric(value) || length(value) != 1 || !is.finite(value)) {
    arg_error(name, "must be one finite number", value)
  }
  as.character(value)
}

whole_text <- function(name, value) {
  if (!is.numeric(value) || length(value) != 1 || !is.finite(value) || value < 0 ||
      value != round(value)) {
    arg_error(name, "must be one whole number >= 0, like 20", value)
  }
  format(value, scientific = FALSE, trim = TRUE)
}

pair_text <- function(name, value) {
  if (!is.numeric(value) || length(value) != 2 || !all(is.finite(value))) {
    arg_error(name, "must be two finite numbers, c(low, high)", value)
  }
  paste(as.character(value), collapse = ",")
}

groups_text <- function(name, value) {
  if (is.character(value) && length(value) == 1 && is.null(names(value))) {
    return(string_text(name, value))  # already in xband's "G=B1,B2;..." form
  }
  groups <- as.list(value)
  if (is.null(names(groups)) || !all(nzchar(names(groups))) ||
      !all(vapply(groups, is.character, logical(1)))) {
    arg_error(name, paste0("must be a named list of band-name vectors, like ",
                           "list(VIS = c(\"B02\", \"B03\"), NIR = \"B08\")"), value)
  }
  parts <- vapply(names(groups), function(g) {
    paste0(g, "=", names_text(name, groups[[g]]))
  }, character(1))
  paste(parts, collapse = ";")
}

regions_text <- function(name, value) {
  if (is.character(value) && length(value) == 1 && is.null(names(value))) {
    return(string_text(name, value))  # "auto", "50nm", "none" or "VIS=400-700;..."
  }
  ranges <- as.list(value)
  ok <- !is.null(names(ranges)) && all(nzchar(names(ranges))) &&
    all(vapply(ranges, function(r) is.numeric(r) && length(r) == 2 && all(is.finite(r)),
               logical(1)))
  if (!ok) {
    arg_error(name, paste0("must be \"auto\", a width like \"50nm\", \"none\", or a named ",
                           "list of wavelength ranges in nm, like ",
                           "list(VIS = c(400, 700), NIR = c(750, 1300))"), value)
  }
  parts <- vapply(names(ranges), function(r) {
    paste0(r, "=", ranges[[r]][1], "-", ranges[[r]][2])
  }, character(1))
  paste(parts, collapse = ";")
}

budget_text <- function(name, value) {
  if (is.numeric(value)) {
    if (length(value) != 1 || !is.finite(value) || value <= 0) {
      arg_error(name, "must be a time: seconds (a number > 0) or a string like \"5m\"", value)
    }
    return(paste0(as.character(value), "s"))
  }
  string_text(name, value)
}

# list(integrated_gradients.n_steps = 64) or list(integrated_gradients = list(n_steps = 64))
# -> --method-option integrated_gradients.n_steps=64 (one per option)
method_option_words <- function(options) {
  if (is.null(options)) return(character())
  options <- as.list(options)
  must <- paste0("must be a named list, like list(integrated_gradients.n_steps = 64) or ",
                 "list(integrated_gradients = list(n_steps = 64))")
  if (is.null(names(options)) || !all(nzchar(names(options)))) {
    arg_error("method_options", must, options)
  }
  words <- character()
  for (key in names(options)) {
    value <- options[[key]]
    if (is.list(value)) {
      inner <- method_option_words(value)
      inner[c(FALSE, TRUE)] <- paste0(key, ".", inner[c(FALSE, TRUE)])
      words <- c(words, inner)
    } else {
      if (length(value) != 1 || is.na(value)) arg_error("method_options", must, options)
      if (is.logical(value)) value <- tolower(as.character(value))
      words <- c(words, "--method-option", paste0(key, "=", as.character(value)))
    }
  }
  words
}
