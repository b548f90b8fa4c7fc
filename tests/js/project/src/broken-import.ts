import { nothing } from "./no-such-file";
export default class { constructor(readonly room: unknown) { void nothing; } }
