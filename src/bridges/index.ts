export { bridgeA2aCall, type BridgedAnswer, type BridgedCall } from './a2a-version.js';
