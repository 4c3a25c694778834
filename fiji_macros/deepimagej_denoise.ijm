// deepimagej_denoise.ijm: run a selfden package (or any bioimage.io model) with deepImageJ 3.
//
// deepImageJ runs the package's ONNX weights inside Fiji, without selfden or Python. It needs
// the unzipped model folder; Fiji with the DeepImageJ update site (deepImageJ 3.1 or newer).
//
// Interactive use: run the macro; the dialog asks for the model folder, the input (empty: the
// active image) and the output folder, remembered between uses.
//
// Scripted use: a non-empty argument replaces the dialog, in the same two formats as
// selfden_denoise.ijm (an ImageJ option string with [bracketed] values, or one key=value per line):
//     runMacro("deepimagej_denoise.ijm", "model=[/models/my model] input=[/data/raw] output=[/data/out]");
// Keys: model (unzipped model folder; required), input (an image file or a folder of images;
// default: the active image), output (results folder; created if missing; default: a
// "deepimagej_output" folder next to the input), dry_run (true: only print the deepImageJ command).
//
// The command it runs (deepImageJ's own macro syntax, snake_case keys, [bracketed] absolute paths):
//     run("DeepImageJ Run", "model_path=[...] input_path=[...] output_folder=[...] display_output=null");
// deepImageJ names each result <input title>_<output id>.tif (selfden packages: <title>_output.tif).

var VERSION = "0.1.0";
var PREFS = "selfden.deepimagej.";
var KNOWN_KEYS = newArray("model", "input", "output", "dry_run");
var DEVICES = newArray("auto", "cpu", "cuda"); // used by the shared parser only
var WORK_DIR = "";          // temporary folder holding a copy of the active image
var PLAIN_HEADLESS = false;

macro "deepImageJ denoise" {
	main();
}

function main() {
	argument = scriptedArgument();
	PLAIN_HEADLESS = prepareHeadless();
	if (lengthOf(String.trim(argument)) > 0) {
		parseArguments(argument);
		settings = settingsFromArguments();
	} else {
		settings = settingsFromDialog();
	}
	runDeepImageJ(settings);
}

// ----------------------------------------------------------------------------- settings
// settings is an array: model, input, output, dry_run.

function settingsFromArguments() {
	model = argumentValue("model", "");
	input = argumentValue("input", "");
	output = argumentValue("output", "");
	dryRun = parseFlag(argumentValue("dry_run", "false"), "dry_run");
	return newArray(model, input, output, dryRun);
}

function settingsFromDialog() {
	Dialog.create("deepImageJ denoise " + VERSION);
	Dialog.addDirectory("Model folder (unzipped)", call("ij.Prefs.get", PREFS + "model", ""));
	Dialog.addFile("Input image or folder (empty: the active image)", "");
	Dialog.addDirectory("Output folder", call("ij.Prefs.get", PREFS + "output", ""));
	Dialog.addCheckbox("Only print the deepImageJ command (dry run)", false);
	Dialog.show();
	model = modelFolder(Dialog.getString());
	input = String.trim(Dialog.getString());
	output = String.trim(Dialog.getString());
	dryRun = Dialog.getCheckbox();
	call("ij.Prefs.set", PREFS + "model", model);
	call("ij.Prefs.set", PREFS + "output", output);
	return newArray(model, input, output, dryRun);
}

// ----------------------------------------------------------------------------- the run
function runDeepImageJ(settings) {
	model = checkModel(absolutePath(modelFolder(settings[0])));
	input = settings[1];
	dryRun = settings[3];
	if (!dryRun) checkDeepImageJInstalled();
	if (input != "") {
		input = absolutePath(input);
		if (!File.exists(input)) fail("input not found: " + input + "; give an image file or a folder of images.");
	} else {
		if (settings[2] == "") fail("no output folder given: pass output=[/path/for/results] (deepImageJ writes files there).");
		input = activeImageCopy(dryRun);
	}
	output = outputFolder(settings[2], input);
	options = deepImageJOptions(model, input, output);
	print("[selfden] run(\"DeepImageJ Run\", \"" + replace(options, "\"", "\\\\\"") + "\");");
	if (dryRun) {
		cleanUp();
		return;
	}
	if (!File.isDirectory(output)) File.makeDirectory(output);
	run("DeepImageJ Run", options);
	print("[selfden] deepImageJ wrote its results to " + output + " (named <input title>_<output id>.tif).");
	if (WORK_DIR != "") openResults(output, File.getName(input));
	cleanUp();
}

// Opens what deepImageJ wrote for the active image's copy: NAME_<output id>.tif or NAME.tif_<id>.tif.
function openResults(output, copyName) {
	base = stripImageExtension(copyName);
	files = getFileList(output + File.separator);
	for (i = 0; i < files.length; i++) {
		if (startsWith(files[i], base + "_") || startsWith(files[i], copyName + "_")) {
			open(output + File.separator + files[i]);
			print("[selfden] opened " + files[i]);
		}
	}
}

// The option string for deepImageJ's macro command: snake_case keys (deepImageJ 3 never matches
// camelCase ones) and absolute paths in brackets, which ImageJ ends at the first "]".
function deepImageJOptions(model, input, output) {
	values = newArray(model, input, output);
	for (i = 0; i < values.length; i++)
		if (indexOf(values[i], "]") >= 0) fail("deepImageJ cannot take a path containing \"]\": " + values[i] + "; rename or move it.");
	return "model_path=[" + model + "] input_path=[" + input + "] output_folder=[" + output + "] display_output=null";
}

// deepImageJ reads the unzipped folder; a .zip must be unpacked (or installed with deepImageJ).
function checkModel(model) {
	if (model == "") fail("no model given: pass model=[/path/to/model folder].");
	lower = toLowerCase(model);
	if (endsWith(lower, ".zip")) fail("deepImageJ needs the unzipped model folder, not " + model + "; unzip it first (or use DeepImageJ Install Model).");
	if (!File.isDirectory(model)) fail("model folder not found: " + model);
	rdf = model + File.separator + "rdf.yaml";
	if (!File.exists(rdf)) fail(model + " has no rdf.yaml: point model= at the package folder (selfden train writes RUN/model).");
	text = File.openAsString(rdf);
	if (indexOf(text, "onnx") < 0) print("[selfden] warning: " + rdf + " lists no ONNX weights; deepImageJ may not run it.");
	return model;
}

function activeImageCopy(dryRun) {
	if (nImages == 0) fail("no image is open and no input=[...] was given.");
	if (bitDepth() == 24) fail("\"" + getTitle() + "\" is an RGB image: convert it (Image > Type > 8-bit) or split its channels first.");
	name = stripImageExtension(getTitle()) + ".tif";
	if (dryRun) return getDirectory("temp") + "selfden_<unique>" + File.separator + name;
	WORK_DIR = makeWorkDir(getDirectory("temp"));
	path = WORK_DIR + name;
	saveCopy(getImageID(), path);
	return path;
}

// The given folder, else "deepimagej_output" next to the input file (or "FOLDER_deepimagej_output").
// A user function's string result goes through a variable: the macro language reads
// `return f(x);` as a number.
function outputFolder(output, input) {
	if (output != "") {
		folder = absolutePath(output);
		return folder;
	}
	folder = stripSeparator(input);
	if (File.isDirectory(input)) return folder + "_deepimagej_output";
	return File.getParent(input) + File.separator + "deepimagej_output";
}

function checkDeepImageJInstalled() {
	List.setCommands;
	installed = List.get("DeepImageJ Run");
	if (installed == "") fail("deepImageJ is not installed: Help > Update... > Manage update sites > tick DeepImageJ, apply, restart Fiji.");
}

function absolutePath(path) {
	path = String.trim(path);
	if (path == "") return path;
	absolute = startsWith(path, "/") || startsWith(path, "\\\\") || matches(path, "^[A-Za-z]:[\\\\/].*");
	if (!absolute) path = call("java.lang.System.getProperty", "user.dir") + File.separator + path;
	path = stripSeparator(path);
	return path;
}

function stripSeparator(path) {
	while (lengthOf(path) > 1 && (endsWith(path, "/") || endsWith(path, "\\"))) path = substring(path, 0, lengthOf(path) - 1);
	return path;
}

// The "shared:" sections below are the same in every selfden macro that has them (a test
// checks): edit them in selfden_denoise.ijm and copy them over.

// ----------------------------------------------------------------------------- shared: temporary copies
function makeWorkDir(base) {
	if (!endsWith(base, "/") && !endsWith(base, "\\")) base = base + File.separator;
	if (!File.isDirectory(base)) fail("temporary folder does not exist: " + base);
	for (attempt = 0; attempt < 100; attempt++) {
		dir = base + "selfden_" + d2s(getTime(), 0) + "_" + IJ.pad(floor(random() * 1000000), 6) + File.separator;
		if (!File.exists(dir)) {
			File.makeDirectory(dir);
			if (File.isDirectory(dir)) return dir;
		}
	}
	fail("could not create a temporary folder in " + base + "; check that it is writable.");
}

// Saves the pixels of the image without attaching the image to the temporary file: with a GUI
// a duplicate is saved (save() would make File > Save and Revert point at the deleted copy).
function saveCopy(image, path) {
	selectImage(image);
	if (PLAIN_HEADLESS) {
		save(path);
		return;
	}
	wasBatch = is("Batch Mode");
	if (!wasBatch) setBatchMode(true);
	hadSelection = selectionType() != -1;
	if (hadSelection) run("Select None");
	run("Duplicate...", "title=[selfden input] duplicate");
	save(path);
	close();
	selectImage(image);
	if (hadSelection) run("Restore Selection");
	if (!wasBatch) setBatchMode(false);
}

function stripImageExtension(title) {
	lower = toLowerCase(title);
	extensions = newArray(".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".npy");
	for (i = 0; i < extensions.length; i++)
		if (endsWith(lower, extensions[i])) return substring(title, 0, lengthOf(title) - lengthOf(extensions[i]));
	return title;
}

// ----------------------------------------------------------------------------- shared: cleanup, errors
function cleanUp() {
	if (WORK_DIR == "") return;
	deleteTree(WORK_DIR);
	if (File.exists(WORK_DIR)) print("[selfden] could not remove the temporary folder " + WORK_DIR);
	WORK_DIR = "";
}

function deleteTree(dir) {
	files = getFileList(dir);
	for (i = 0; i < files.length; i++) {
		if (endsWith(files[i], "/")) deleteTree(dir + files[i]);
		else dummy = File.delete(dir + files[i]);
	}
	dummy = File.delete(dir);
}

// Removes the temporary folder, then stops with the message: a message box with a GUI, the Log
// (stdout when headless) otherwise.
function fail(message) {
	cleanUp();
	print("[selfden] " + message);
	exit(message);
}

// Plain ImageJ without a display (tests, servers) builds its menus on first use and fails; the
// failed attempt, caught inside call(), leaves an empty command table that lets open() work.
function prepareHeadless() {
	headless = "" + call("java.awt.GraphicsEnvironment.isHeadless");
	if (headless != "true") return false;
	commands = "" + call("ij.Menus.getCommands");
	if (commands != "null") return false;
	dummy = call("ij.IJ.run", "Collect Garbage");
	return true;
}

// ----------------------------------------------------------------------------- shared: argument parsing
function scriptedArgument() {
	argument = getArgument();
	if (argument != "") return argument;
	// Run as an installed command, run("selfden denoise", "model=[...]") passes its options here.
	options = "" + call("ij.Macro.getOptions");
	if (options == "null") return "";
	return options;
}

// A model picked in a file chooser is often the rdf.yaml inside the folder: use the folder.
function modelFolder(path) {
	path = String.trim(path);
	if (endsWith(path, "rdf.yaml") || endsWith(path, "rdf.yml")) return File.getParent(path);
	return path;
}

// Same parser in all selfden macros. Two formats: one key=value per line (when the argument has
// a newline), or an ImageJ option string: key=value, key=[value with spaces] (the value ends at
// a "]" followed by a space or the end) and bare keys meaning true. Values are kept in List.

function parseArguments(text) {
	List.clear();
	if (indexOf(text, "\n") >= 0) parseLines(text);
	else parseOptionString(text);
}

function parseLines(text) {
	lines = split(text, "\n");
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (line == "" || startsWith(line, "#")) continue;
		equals = indexOf(line, "=");
		if (equals < 0) storeArgument(line, "true");
		else storeArgument(substring(line, 0, equals), substring(line, equals + 1));
	}
}

// Scanning compares single characters held in variables: the macro language evaluates both
// sides of && and ||, and treats a user function's result in a comparison as a number.
function parseOptionString(text) {
	n = lengthOf(text);
	i = skipSpaces(text, 0);
	while (i < n) {
		start = i;
		i = scanWord(text, i, true);
		key = substring(text, start, i);
		value = "true";
		c = charAt(text, i);
		if (c == "=") {
			i++;
			c = charAt(text, i);
			if (c == "[") {
				end = closingBracket(text, i + 1);
				if (end < 0) fail("argument " + key + "=[... has no closing ]");
				value = substring(text, i + 1, end);
				i = end + 1;
			} else {
				start = i;
				i = scanWord(text, i, false);
				value = substring(text, start, i);
			}
		}
		storeArgument(key, value);
		i = skipSpaces(text, i);
	}
}

// Index of the first space (or "=" when stopAtEquals) at or after i; the length if none.
function scanWord(text, i, stopAtEquals) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (isSpace(c)) return i;
		if (stopAtEquals) {
			if (c == "=") return i;
		}
		i++;
	}
	return n;
}

// A value in brackets ends at the first "]" followed by a space or the end of the text.
function closingBracket(text, from) {
	n = lengthOf(text);
	for (j = from; j < n; j++) {
		c = substring(text, j, j + 1);
		next = charAt(text, j + 1);
		if (c == "]") {
			if (next == "") return j;
			if (isSpace(next)) return j;
		}
	}
	return -1;
}

function skipSpaces(text, i) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (!isSpace(c)) return i;
		i++;
	}
	return n;
}

function charAt(text, i) {
	if (i >= lengthOf(text)) return "";
	return substring(text, i, i + 1);
}

function isSpace(c) {
	if (c == " " || c == "\t" || c == "\r") return true;
	return false;
}

function storeArgument(key, value) {
	key = replace(toLowerCase(String.trim(key)), "-", "_");
	for (k = 0; k < KNOWN_KEYS.length; k++) {
		if (key == KNOWN_KEYS[k]) {
			List.set(key, String.trim(value));
			return;
		}
	}
	fail("unknown argument '" + key + "'; expected " + String.join(KNOWN_KEYS, ", "));
}

function argumentValue(key, fallback) {
	value = List.get(key);
	if (value == "") return fallback;
	return value;
}

function parseCount(text, name) {
	value = parseInt(String.trim(text));
	if (isNaN(value) || value < 0 || value != parseFloat(String.trim(text)))
		fail(name + " must be a whole number >= 0, got '" + text + "'");
	return value;
}

function parseFlag(text, name) {
	lower = toLowerCase(String.trim(text));
	if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
	if (lower == "false" || lower == "0" || lower == "no" || lower == "off" || lower == "") return false;
	fail(name + " must be true or false, got '" + text + "'");
}

function parseDevice(text) {
	lower = toLowerCase(String.trim(text));
	for (d = 0; d < DEVICES.length; d++) {
		device = DEVICES[d];
		if (lower == device) return device;
	}
	fail("device must be auto, cpu or cuda, got '" + text + "'");
}
