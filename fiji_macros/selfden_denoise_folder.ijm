// selfden_denoise_folder.ijm: denoise every image (.tif, .tiff, .png) in a folder with selfden.
//
// Interactive use: run the macro and pick the input folder, the output folder and the model.
// Choices are remembered between uses.
//
// Scripted use: a non-empty argument replaces the dialog, in the same two formats as
// selfden_denoise.ijm (an ImageJ option string with [bracketed] values, or one key=value per line):
//     runMacro("selfden_denoise_folder.ijm", "input=[/data/raw] output=[/data/denoised] model=[/models/m]");
// Keys: input (folder of images; required), output (folder for the results, created if missing,
// must differ from input), model (folder, rdf.yaml or .zip; required), samples, std, device,
// tile_size, selfden, tta (as in selfden_denoise.ijm), overwrite (true: redo images whose result exists).
//
// Each image is one `selfden infer` call (each argument passed separately), so one failing image
// is logged and the batch goes on. Results are IMAGE_denoised.tif in the output folder, with the
// metadata selfden carries over; selfden_batch_log.txt there records file, status, time and error.
// No temporary files: selfden writes each result under a temporary name and renames it when done.

var VERSION = "0.1.0";
var PREFS = "selfden.folder.";
var KNOWN_KEYS = newArray("input", "output", "model", "samples", "std", "device", "tile_size", "selfden", "overwrite", "tta");
var DEVICES = newArray("auto", "cpu", "cuda");
var IMAGE_SUFFIXES = newArray(".tif", ".tiff", ".png");
var LOG_NAME = "selfden_batch_log.txt";
var WORK_DIR = "";          // unused here (no temporary folder); cleanUp() is shared with the other macros
var PLAIN_HEADLESS = false; // unused here: no image is opened in ImageJ

macro "selfden denoise folder" {
	main();
}

function main() {
	argument = scriptedArgument();
	if (lengthOf(String.trim(argument)) > 0) {
		parseArguments(argument);
		settings = settingsFromArguments();
	} else {
		settings = settingsFromDialog();
	}
	setBatchMode(true);
	denoiseFolder(settings);
}

// ----------------------------------------------------------------------------- settings
// settings is an array: input, output, model, samples, std, device, tile_size, selfden, overwrite, tta.

function settingsFromArguments() {
	input = argumentValue("input", "");
	output = argumentValue("output", "");
	model = argumentValue("model", "");
	samples = parseCount(argumentValue("samples", "0"), "samples");
	std = parseFlag(argumentValue("std", "false"), "std");
	device = parseDevice(argumentValue("device", "auto"));
	tile = parseCount(argumentValue("tile_size", "0"), "tile_size");
	selfden = argumentValue("selfden", "selfden");
	overwrite = parseFlag(argumentValue("overwrite", "false"), "overwrite");
	tta = parseFlag(argumentValue("tta", "false"), "tta");
	return newArray(input, output, model, samples, std, device, tile, selfden, overwrite, tta);
}

function settingsFromDialog() {
	Dialog.create("selfden denoise folder " + VERSION);
	Dialog.addDirectory("Input folder (.tif, .tiff, .png)", call("ij.Prefs.get", PREFS + "input", ""));
	Dialog.addDirectory("Output folder", call("ij.Prefs.get", PREFS + "output", ""));
	Dialog.addFile("Model (folder, its rdf.yaml, or .zip)", call("ij.Prefs.get", "selfden.model", ""));
	Dialog.addNumber("COSDD samples (0 = direct denoiser)", 0);
	Dialog.addCheckbox("Uncertainty map (std over the samples)", false);
	Dialog.addCheckbox("Average the flips/rotations it was trained with (tta; up to 8x the time)", false);
	Dialog.addChoice("Device", DEVICES, call("ij.Prefs.get", "selfden.device", "auto"));
	Dialog.addNumber("Tile size (0 = model's suggestion)", 0);
	Dialog.addFile("selfden executable", call("ij.Prefs.get", "selfden.executable", "selfden"));
	Dialog.addCheckbox("Redo images whose result already exists", false);
	Dialog.addMessage("Help: fiji_macros/README.md in the selfden sources.");
	Dialog.show();
	input = Dialog.getString();
	output = Dialog.getString();
	model = modelFolder(Dialog.getString());
	samples = parseCount("" + Dialog.getNumber(), "samples");
	std = Dialog.getCheckbox();
	tta = Dialog.getCheckbox();
	device = Dialog.getChoice();
	tile = parseCount("" + Dialog.getNumber(), "tile size");
	selfden = Dialog.getString();
	overwrite = Dialog.getCheckbox();
	call("ij.Prefs.set", PREFS + "input", input);
	call("ij.Prefs.set", PREFS + "output", output);
	call("ij.Prefs.set", "selfden.model", model);
	call("ij.Prefs.set", "selfden.device", device);
	call("ij.Prefs.set", "selfden.executable", selfden);
	return newArray(input, output, model, samples, std, device, tile, selfden, overwrite, tta);
}

// ----------------------------------------------------------------------------- the batch
function denoiseFolder(settings) {
	input = withSeparator(settings[0]);
	output = withSeparator(settings[1]);
	model = modelFolder(settings[2]);
	selfden = String.trim(settings[7]);
	checkFolders(input, output);
	if (model == "") fail("no model given: pass model=[/path/to/model folder or .zip].");
	checkExecutable(selfden);
	images = imageFiles(input);
	if (images.length == 0) fail("no .tif, .tiff or .png images in " + input);
	logPath = output + LOG_NAME;
	logFile = File.open(logPath);
	print(logFile, "# selfden batch " + timestamp() + ", macro " + VERSION);
	print(logFile, "# input: " + input);
	print(logFile, "# output: " + output);
	print(logFile, "# command: " + commandLine(selfden, inferArguments(model, "IMAGE", "RESULT", settings, settings[8])));
	print(logFile, "time\tfile\tstatus\tseconds\tmessage");
	counts = newArray(0, 0, 0);
	for (i = 0; i < images.length; i++) {
		showProgress(i, images.length);
		status = denoiseOne(input, output + resultName(images[i], images), images[i], model, selfden, settings);
		print(logFile, timestamp() + "\t" + images[i] + "\t" + status);
		parts = split(status, "\t");
		print("[selfden] " + (i + 1) + "/" + images.length + " " + images[i] + ": " + String.join(parts, " "));
		if (startsWith(status, "ok")) counts[0]++;
		else if (startsWith(status, "failed")) counts[1]++;
		else counts[2]++;
	}
	File.close(logFile);
	summary = "" + images.length + " images: " + counts[0] + " denoised, " + counts[1] + " failed, " + counts[2] + " skipped. Log: " + logPath;
	print("[selfden] " + summary);
	if (counts[1] > 0 && !is("Batch Mode")) showMessage("selfden denoise folder", summary);
}

// One image: returns "ok\tSECONDS\t", "failed\tSECONDS\tERROR" or "skipped\t0\tREASON".
function denoiseOne(input, result, name, model, selfden, settings) {
	existed = File.exists(result);
	if (existed && !settings[8]) return "skipped\t0\t" + File.getName(result) + " exists (overwrite=true redoes it)";
	before = "";
	if (existed) before = File.lastModified(result);
	start = getTime();
	transcript = runSelfden(selfden, inferArguments(model, input + name, result, settings, existed));
	seconds = d2s((getTime() - start) / 1000, 1);
	// A failed redo leaves the earlier result in place: only a new file counts as done.
	if (File.exists(result) && (!existed || File.lastModified(result) != before)) return "ok\t" + seconds + "\t";
	return "failed\t" + seconds + "\t" + replace(failureMessage(transcript, selfden), "\n", " ");
}

// IMAGE_denoised.tif; IMAGE_png_denoised.tif when another image has the same name but suffix.
function resultName(name, images) {
	base = substring(name, 0, lastIndexOf(name, "."));
	for (k = 0; k < images.length; k++) {
		other = images[k];
		otherBase = substring(other, 0, lastIndexOf(other, "."));
		if (other != name && otherBase == base) return base + "_" + substring(name, lastIndexOf(name, ".") + 1) + "_denoised.tif";
	}
	return base + "_denoised.tif";
}

function imageFiles(folder) {
	files = getFileList(folder);
	images = newArray(0);
	for (i = 0; i < files.length; i++)
		if (isImageName(files[i])) images = Array.concat(images, files[i]);
	Array.sort(images);
	return images;
}

function isImageName(name) {
	lower = toLowerCase(name);
	if (startsWith(lower, ".")) return false;
	for (s = 0; s < IMAGE_SUFFIXES.length; s++)
		if (endsWith(lower, IMAGE_SUFFIXES[s])) return true;
	return false;
}

function checkFolders(input, output) {
	if (input == File.separator) fail("no input folder given: pass input=[/path/to/images].");
	if (!File.isDirectory(input)) fail("input folder not found: " + input);
	if (output == File.separator) fail("no output folder given: pass output=[/path/to/results].");
	same = lengthOf(input) == lengthOf(output) && indexOf(input, output) == 0;
	if (same) fail("the output folder is the input folder (" + input + "): choose another so results never mix with, or overwrite, the originals.");
	if (!File.isDirectory(output)) File.makeDirectory(output);
	if (!File.isDirectory(output)) fail("could not create the output folder " + output);
}

function withSeparator(folder) {
	folder = String.trim(folder);
	if (endsWith(folder, "/") || endsWith(folder, "\\")) return folder;
	return folder + File.separator;
}

function timestamp() {
	getDateAndTime(year, month, dayOfWeek, day, hour, minute, second, msec);
	return "" + year + "-" + IJ.pad(month + 1, 2) + "-" + IJ.pad(day, 2) + " " + IJ.pad(hour, 2) + ":" + IJ.pad(minute, 2) + ":" + IJ.pad(second, 2);
}

// The "shared:" sections below are the same in every selfden macro that has them (a test
// checks): edit them in selfden_denoise.ijm and copy them over.

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
