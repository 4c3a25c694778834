// selfden_denoise.ijm: denoise the active image with selfden (https://github.com/selfden).
//
// Interactive use (Fiji or ImageJ): open an image, run this macro, and choose the model in the
// dialog. The model, the selfden executable and the options are remembered for next time.
//
// Scripted use: a non-empty argument replaces the dialog. It holds key=value pairs, written
// either as an ImageJ option string, where brackets protect spaces and quotes:
//     runMacro("selfden_denoise.ijm", "model=[/data/my model] samples=20 std device=cpu");
// or as one key=value per line, where everything after the first "=" is the value:
//     runMacro("selfden_denoise.ijm", "model=/data/my model\ninput=/data/cell's image.tif");
// Keys: model (folder, rdf.yaml or .zip; required), input (image file to open; default: the
// active image), output (.tif to save the result to; the std map goes to ..._std.tif),
// samples (COSDD posterior samples, 0 = direct denoiser), std (true/false: uncertainty map),
// tta (true/false: average over the flips/rotations the model was trained with; up to 8x the time),
// device (auto, cpu, cuda), tile_size (pixels, 0 = the model's suggestion),
// selfden (path of the selfden executable; default: "selfden" found on PATH),
// tmpdir (folder for the temporary working folder; default: ImageJ's temp folder),
// overwrite (true: replace an existing output file and its _std.tif; default false: refuse).
//
// The image is saved to a private temporary folder, `selfden infer` denoises it (each argument
// is passed separately, never through a shell's word splitting), and the result opens with the
// original's title + "_denoised", calibration and stack layout. The temporary folder is removed
// whether selfden succeeds or fails; a failure shows selfden's own one-line error. selfden writes
// into that fresh private folder only, so it is called with --overwrite; the file the user names
// with output= is replaced only with overwrite=true.

var VERSION = "0.1.0";
var PREFS = "selfden.";
var KNOWN_KEYS = newArray("model", "input", "output", "samples", "std", "device", "tile_size", "selfden", "tmpdir", "tta", "overwrite");
var DEVICES = newArray("auto", "cpu", "cuda");
var WORK_DIR = "";          // the private temporary folder, removed by cleanUp()
var PLAIN_HEADLESS = false; // plain ImageJ without a display: run("...") commands are unavailable

// A macro block, so that Plugins > Macros > Install... adds a menu command; running the file runs it.
macro "selfden denoise" {
	main();
}

function main() {
	argument = scriptedArgument();
	scripted = lengthOf(String.trim(argument)) > 0;
	PLAIN_HEADLESS = prepareHeadless();
	if (scripted) {
		parseArguments(argument);
		settings = settingsFromArguments();
	} else {
		settings = settingsFromDialog();
	}
	denoiseImage(settings);
}

// ----------------------------------------------------------------------------- settings
// settings is an array: model, input, output, samples, std, device, tile_size, selfden, tmpdir, tta, overwrite.

function settingsFromArguments() {
	model = argumentValue("model", "");
	input = argumentValue("input", "");
	output = argumentValue("output", "");
	samples = parseCount(argumentValue("samples", "0"), "samples");
	std = parseFlag(argumentValue("std", "false"), "std");
	device = parseDevice(argumentValue("device", "auto"));
	tile = parseCount(argumentValue("tile_size", "0"), "tile_size");
	selfden = argumentValue("selfden", "selfden");
	tmpdir = argumentValue("tmpdir", getDirectory("temp"));
	tta = parseFlag(argumentValue("tta", "false"), "tta");
	overwrite = parseFlag(argumentValue("overwrite", "false"), "overwrite");
	return newArray(model, input, output, samples, std, device, tile, selfden, tmpdir, tta, overwrite);
}

function settingsFromDialog() {
	if (nImages == 0) fail("no image is open: open the image to denoise first.");
	Dialog.create("selfden denoise " + VERSION);
	Dialog.addMessage("Denoise \"" + getTitle() + "\" with a selfden / bioimage.io model (ONNX weights).");
	Dialog.addFile("Model (folder, its rdf.yaml, or .zip)", call("ij.Prefs.get", PREFS + "model", ""));
	Dialog.addNumber("COSDD samples (0 = direct denoiser)", parseInt(call("ij.Prefs.get", PREFS + "samples", "0")));
	Dialog.addCheckbox("Uncertainty map (std over the samples)", parseFlag(call("ij.Prefs.get", PREFS + "std", "false"), "std"));
	Dialog.addCheckbox("Average the flips/rotations it was trained with (tta; up to 8x the time)", parseFlag(call("ij.Prefs.get", PREFS + "tta", "false"), "tta"));
	Dialog.addChoice("Device", DEVICES, call("ij.Prefs.get", PREFS + "device", "auto"));
	Dialog.addNumber("Tile size (0 = model's suggestion)", 0);
	Dialog.addFile("selfden executable", call("ij.Prefs.get", PREFS + "executable", "selfden"));
	Dialog.addMessage("Help: fiji_macros/README.md in the selfden sources.");
	Dialog.show();
	model = modelFolder(Dialog.getString());
	samples = parseCount("" + Dialog.getNumber(), "samples");
	std = Dialog.getCheckbox();
	tta = Dialog.getCheckbox();
	device = Dialog.getChoice();
	tile = parseCount("" + Dialog.getNumber(), "tile size");
	selfden = Dialog.getString();
	call("ij.Prefs.set", PREFS + "model", model);
	call("ij.Prefs.set", PREFS + "samples", "" + samples);
	if (std) call("ij.Prefs.set", PREFS + "std", "true");
	else call("ij.Prefs.set", PREFS + "std", "false");
	if (tta) call("ij.Prefs.set", PREFS + "tta", "true");
	else call("ij.Prefs.set", PREFS + "tta", "false");
	call("ij.Prefs.set", PREFS + "device", device);
	call("ij.Prefs.set", PREFS + "executable", selfden);
	// The dialog only shows the result (no output file), so there is nothing to overwrite.
	return newArray(model, "", "", samples, std, device, tile, selfden, getDirectory("temp"), tta, false);
}

// ----------------------------------------------------------------------------- the work
function denoiseImage(settings) {
	model = modelFolder(settings[0]);
	input = settings[1];
	output = settings[2];
	selfden = String.trim(settings[7]);
	if (model == "") fail("no model given: pass model=[/path/to/model folder or .zip] (selfden train writes RUN/model).");
	checkExecutable(selfden);
	checkOutputPath(output, settings[4], settings[10]);
	original = targetImage(input);
	if (bitDepth() == 24) fail("\"" + getTitle() + "\" is an RGB image: convert it (Image > Type > 8-bit) or split its channels (Image > Color > Split Channels) first.");
	WORK_DIR = makeWorkDir(settings[8]);
	tmpIn = WORK_DIR + "input.tif";
	tmpOut = WORK_DIR + "denoised.tif";
	saveCopy(original, tmpIn);
	transcript = runSelfden(selfden, inferArguments(model, tmpIn, tmpOut, settings, true));
	if (!File.exists(tmpOut)) fail(failureMessage(transcript, selfden));
	results = openResults(original, tmpOut, settings[4]);
	cleanUp();
	if (output != "") saveResults(results, output);
	if (input != "") closeImage(original);
	selectImage(results[0]);
	print("[selfden] done: " + getTitle());
}

function targetImage(input) {
	if (input == "") {
		if (nImages == 0) fail("no image is open and no input=[...] was given.");
		return getImageID();
	}
	if (!File.exists(input)) fail("input image not found: " + input + "; give the full path of an existing image file.");
	open(input);
	return getImageID();
}

// Before any work: a bad or existing output (and its _std.tif with std) stops the macro, unless overwrite.
function checkOutputPath(output, wantStd, overwrite) {
	if (output == "") return;
	lower = toLowerCase(output);
	if (!endsWith(lower, ".tif") && !endsWith(lower, ".tiff")) fail("output must be a .tif file, got " + output);
	parent = File.getParent(output);
	if (!File.isDirectory(parent)) fail("output folder does not exist: " + parent);
	if (overwrite) return;
	if (File.exists(output)) fail(output + " exists; pass overwrite=true to replace it or choose another output.");
	stdOutput = substring(output, 0, lastIndexOf(output, ".")) + "_std.tif";
	if (wantStd && File.exists(stdOutput)) fail(stdOutput + " exists; pass overwrite=true to replace it or choose another output.");
}

function openResults(original, tmpOut, wantStd) {
	selectImage(original);
	title = stripImageExtension(getTitle());
	denoised = openResult(original, tmpOut, title + "_denoised", true);
	// newArray(number) would make an array of that size, and image IDs are numbers.
	single = newArray(1);
	single[0] = denoised;
	if (!wantStd) return single;
	stdPath = findStdMap(tmpOut);
	if (stdPath == "") {
		print("[selfden] no std map was written (the model may have no sampler); only the denoised image is shown.");
		return single;
	}
	std = openResult(original, stdPath, title + "_denoised_std", false);
	return newArray(denoised, std);
}

// The std map is the other result file selfden wrote next to the denoised one (its name holds "std").
function findStdMap(tmpOut) {
	files = getFileList(WORK_DIR);
	for (i = 0; i < files.length; i++) {
		path = WORK_DIR + files[i];
		if (path != tmpOut) {
			if (indexOf(toLowerCase(files[i]), "std") >= 0) return path;
		}
	}
	return "";
}

function openResult(original, path, title, sameDisplayRange) {
	selectImage(original);
	Stack.getDimensions(width, height, channels, slices, frames);
	getVoxelSize(pixelWidth, pixelHeight, pixelDepth, unit);
	interval = Stack.getFrameInterval();
	Stack.getUnits(xUnit, yUnit, zUnit, timeUnit, valueUnit);
	Stack.getPosition(channel, slice, frame);
	getMinAndMax(displayMin, displayMax);
	open(path);
	rename(title);
	if (getWidth() != width || getHeight() != height || nSlices != channels * slices * frames)
		fail("selfden wrote " + getWidth() + "x" + getHeight() + "x" + nSlices + " pixels for a " + width + "x" + height + "x" + (channels * slices * frames) + " image; please report this.");
	if (nSlices > 1) Stack.setDimensions(channels, slices, frames);
	setVoxelSize(pixelWidth, pixelHeight, pixelDepth, unit);
	if (frames > 1) {
		Stack.setFrameInterval(interval);
		Stack.setTUnit(timeUnit);
	}
	if (nSlices > 1) Stack.setPosition(channel, slice, frame);
	if (sameDisplayRange) setMinAndMax(displayMin, displayMax);
	else resetMinAndMax();
	return getImageID();
}

function saveResults(results, output) {
	selectImage(results[0]);
	save(output);
	print("[selfden] saved " + output);
	if (results.length < 2) return;
	stdOutput = substring(output, 0, lastIndexOf(output, ".")) + "_std.tif";
	selectImage(results[1]);
	save(stdOutput);
	print("[selfden] saved " + stdOutput);
}

function closeImage(image) {
	selectImage(image);
	close();
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

// ----------------------------------------------------------------------------- shared: running selfden
function checkExecutable(selfden) {
	if (selfden == "") fail("no selfden executable given: use \"selfden\" (found on PATH) or its full path.");
	hasFolder = indexOf(selfden, "/") >= 0 || indexOf(selfden, "\\") >= 0;
	if (hasFolder && !File.exists(selfden))
		fail("selfden executable not found at " + selfden + "; in a terminal where selfden works, `which selfden` (Windows: `where selfden`) prints its full path.");
}

// settings[3..6] are samples, std, device and tile size, settings[9] tta, in both selfden macros.
// overwrite: pass --overwrite (selfden infer refuses to replace an existing result without it).
function inferArguments(model, image, result, settings, overwrite) {
	args = newArray("infer", model, image, "-o", result, "--device", settings[5]);
	if (settings[6] > 0) args = Array.concat(args, newArray("--tile-size", "" + settings[6]));
	if (settings[3] > 0) args = Array.concat(args, newArray("--samples", "" + settings[3]));
	if (settings[4]) args = Array.concat(args, "--std");
	if (settings[9]) args = Array.concat(args, "--tta");
	if (overwrite) args = Array.concat(args, "--overwrite");
	return args;
}

// Runs selfden with each argument separate. ImageJ's exec() returns only the program's stdout, and
// selfden prints its errors on stderr, so where /bin/sh exists it merges the two: the shell script
// is a constant and the arguments reach selfden as "$@", never parsed by the shell.
function runSelfden(selfden, args) {
	print("[selfden] " + commandLine(selfden, args));
	start = getTime();
	if (File.exists("/bin/sh")) {
		wrapper = newArray("/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", selfden);
		output = execArray(Array.concat(wrapper, args));
	} else {
		output = execArray(Array.concat(newArray(selfden), args));
	}
	print("[selfden] finished in " + d2s((getTime() - start) / 1000, 1) + " s");
	return output;
}

function failureMessage(transcript, selfden) {
	line = errorLine(transcript);
	text = "selfden infer failed: " + line;
	if (line == "") text = "selfden infer failed without a message (run the command printed in the Log in a terminal to see why).";
	lower = toLowerCase(transcript);
	missing = indexOf(lower, "not found") >= 0 && indexOf(lower, toLowerCase(selfden)) >= 0;
	if (missing || indexOf(transcript, "Cannot run program") >= 0)
		text = text + "\nThe selfden executable was not found: give its full path (in a terminal where selfden works, `which selfden`, on Windows `where selfden`, prints it).";
	return text;
}

// The line starting with "error:" (selfden's one-line message), else the last non-empty line.
function errorLine(transcript) {
	lines = split(transcript, "\n");
	last = "";
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (startsWith(line, "error:")) return String.trim(substring(line, 6));
		if (line != "") last = line;
	}
	return last;
}

function commandLine(program, args) {
	text = quoteForDisplay(program);
	for (i = 0; i < args.length; i++) text = text + " " + quoteForDisplay(args[i]);
	return text;
}

function quoteForDisplay(text) {
	if (indexOf(text, " ") < 0 && indexOf(text, "'") < 0 && indexOf(text, "\"") < 0) return text;
	return "\"" + text + "\"";
}

// exec() takes its arguments one by one (no array form in ImageJ 1.53), hence the ladder.
function execArray(a) {
	n = a.length;
	if (n == 5) return exec(a[0], a[1], a[2], a[3], a[4]);
	if (n == 6) return exec(a[0], a[1], a[2], a[3], a[4], a[5]);
	if (n == 7) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
	if (n == 8) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
	if (n == 9) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
	if (n == 10) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
	if (n == 11) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
	if (n == 12) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
	if (n == 13) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]);
	if (n == 14) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
	if (n == 15) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14]);
	if (n == 16) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]);
	fail("internal error: " + n + " command arguments; please report this.");
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
